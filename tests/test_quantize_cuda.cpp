#include <catch2/catch.hpp>
#include <torch/torch.h>
#include <wrpn/wrpn.h>

#include <iostream>

TEST_CASE("placeholder: CUDA against CPU", "[cuda]") {
  if (!torch::cuda::is_available()) {
    std::cout << "WRPN_SKIP: no CUDA device" << std::endl;
    return;
  }
  auto x = torch::randn({1000});
  REQUIRE(torch::equal(wrpn::quantize_weight(x.cuda(), 4).cpu(), wrpn::quantize_weight(x, 4)));
}
