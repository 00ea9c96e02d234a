// Uses the installed package: quantize, backpropagate, check against hand values; then train a
// zoo model for one short epoch through wrpn::train::fit and check the summary it returns.
//   consumer DIGITS_ROOT WORK_DIR
#include <torch/torch.h>
#include <wrpn/train/trainer.h>
#include <wrpn/wrpn.h>

#include <iostream>
#include <string>

namespace {

int check_quantizer() {
  auto w = torch::tensor({-1.5f, -0.4f, 0.2f, 0.26f, 0.9f}, torch::requires_grad());
  auto q = wrpn::quantize_weight(w, 2);  // ternary
  q.sum().backward();
  const auto want_q = torch::tensor({-1.0f, -0.0f, 0.0f, 0.0f, 1.0f});
  const auto want_g = torch::tensor({0.0f, 1.0f, 1.0f, 1.0f, 1.0f});
  if (!torch::equal(q, want_q) || !torch::equal(w.grad(), want_g)) {
    std::cerr << "consumer: wrong result\n" << q << "\n" << w.grad() << "\n";
    return 1;
  }
  return 0;
}

int check_training(const std::string& digits_root, const std::string& work_dir) {
  wrpn::train::TrainOptions o;  // ResNet-20, 2x wide, 4-bit weights and activations
  o.model = "resnet20";
  o.dataset = "digits";
  o.data_root = digits_root;
  o.limit_train = 128;
  o.limit_test = 64;
  o.epochs = 1;
  o.batch_size = 32;
  o.threads = 1;
  o.device = "cpu";
  o.quiet = true;
  o.run_dir = work_dir + "/run";
  const nlohmann::json s = wrpn::train::fit(o);
  const double best = s.at("best_top1").get<double>();
  bool ok = s.at("completed").get<bool>() && s.at("epochs_completed").get<int64_t>() == 1 &&
            best >= 0 && best <= 1 && s.at("parameters").get<int64_t>() > 0;
  for (const char* f :
       {"summary.json", "metrics.jsonl", "options.json", "last.ckpt", "best.ckpt"}) {
    if (!wrpn::train::path_exists(o.run_dir + "/" + f)) {
      std::cerr << "consumer: the run wrote no " << f << "\n";
      ok = false;
    }
  }
  if (!ok) {
    std::cerr << "consumer: unexpected training summary\n" << s.dump(2) << "\n";
    return 1;
  }
  std::cout << "consumer: trained " << s.at("model").get<std::string>() << " "
            << s.at("precision_name").get<std::string>() << " for one epoch, top-1 " << best
            << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: consumer DIGITS_ROOT WORK_DIR\n";
    return 2;
  }
  if (check_quantizer() != 0 || check_training(argv[1], argv[2]) != 0) return 1;
  std::cout << "consumer: wrpn " << wrpn::kVersion << " OK\n";
  return 0;
}
