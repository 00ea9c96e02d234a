// Uses the installed package: quantize, backpropagate, check against hand values.
#include <torch/torch.h>
#include <wrpn/wrpn.h>

#include <iostream>

int main() {
  auto w = torch::tensor({-1.5f, -0.4f, 0.2f, 0.26f, 0.9f}, torch::requires_grad());
  auto q = wrpn::quantize_weight(w, 2);  // ternary
  q.sum().backward();
  const auto want_q = torch::tensor({-1.0f, -0.0f, 0.0f, 0.0f, 1.0f});
  const auto want_g = torch::tensor({0.0f, 1.0f, 1.0f, 1.0f, 1.0f});
  if (!torch::equal(q, want_q) || !torch::equal(w.grad(), want_g)) {
    std::cerr << "consumer: wrong result\n" << q << "\n" << w.grad() << "\n";
    return 1;
  }
  std::cout << "consumer: wrpn " << wrpn::kVersion << " OK\n";
  return 0;
}
