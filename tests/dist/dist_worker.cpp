// wrpn_dist_worker: one rank of the data-parallel tests (tests/test_distributed.cpp starts two
// of them with torchrun's environment variables). Each mode writes this rank's tensors to
// OUT_PREFIX<rank>.pt for the test to compare.
//
//   wrpn_dist_worker grad OUT_PREFIX      averaged gradient of one step, the model in eval mode
//   wrpn_dist_worker steps OUT_PREFIX K   parameters and buffers after K SGD steps (train mode)
//   wrpn_dist_worker mismatch OUT_PREFIX  rank r builds width 1 + r: broadcast_module must refuse

#include <torch/torch.h>
#include <wrpn/models/registry.h>
#include <wrpn/train/distributed.h>

#include <cstdio>
#include <string>

#include "dist_common.h"

namespace {

using wrpn::train::DataParallel;

std::vector<torch::Tensor> grads_and_params(wrpn::models::ClassifierImpl& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters())
    out.push_back(p.grad().defined() ? p.grad() : torch::Tensor());
  for (const auto& p : m.parameters()) out.push_back(p.detach());
  return out;
}

std::vector<torch::Tensor> state(wrpn::models::ClassifierImpl& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.detach());
  for (const auto& b : m.buffers()) out.push_back(b.detach());
  return out;
}

int run(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: wrpn_dist_worker grad|steps OUT_PREFIX [K]\n");
    return 2;
  }
  const std::string mode = argv[1], prefix = argv[2];
  at::set_num_threads(1);
  wrpn::train::DataParallelOptions o;
  o.timeout_s = 60;
  o.bucket_mib = 0.25;  // several buckets even for a small model
  auto dp = DataParallel::from_environment(torch::kCPU, o);
  if (!dp) {
    std::fprintf(stderr, "wrpn_dist_worker: WORLD_SIZE is not set\n");
    return 2;
  }
  // Different initial weights on every rank: broadcast_module must make them rank 0's.
  auto model = wrpn_dist_test::make_model(wrpn_dist_test::kSeed + dp->rank(),
                                          mode == "mismatch" ? 1.0 + dp->rank() : 1.0);
  dp->broadcast_module(*model);
  dp->attach_gradients(model->parameters());
  if (mode == "grad") {
    model->eval();
    const auto [x, y] = wrpn_dist_test::batch(0);
    const auto xs = wrpn::train::shard(x, dp->rank(), dp->world_size());
    const auto ys = wrpn::train::shard(y, dp->rank(), dp->world_size());
    const auto loss = torch::nn::functional::cross_entropy(model->forward(xs), ys);
    dp->prepare_for_backward(loss);
    loss.backward();
    torch::save(grads_and_params(*model), prefix + std::to_string(dp->rank()) + ".pt");
  } else if (mode == "steps") {
    const int k = argc > 3 ? std::stoi(argv[3]) : 3;
    model->train();
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
    for (int s = 0; s < k; ++s) {
      const auto [x, y] = wrpn_dist_test::batch(s + 1);
      dp->broadcast_buffers(*model);
      opt.zero_grad();
      const auto loss = torch::nn::functional::cross_entropy(
          model->forward(wrpn::train::shard(x, dp->rank(), dp->world_size())),
          wrpn::train::shard(y, dp->rank(), dp->world_size()));
      dp->prepare_for_backward(loss);
      loss.backward();
      opt.step();
    }
    dp->broadcast_buffers(*model);
    torch::save(state(*model), prefix + std::to_string(dp->rank()) + ".pt");
  } else {
    std::fprintf(stderr, "wrpn_dist_worker: unknown mode '%s'\n", mode.c_str());
    return 2;
  }
  dp->detach_gradients();
  dp->barrier();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "wrpn_dist_worker: %s\n", e.what());
    return 1;
  }
}
