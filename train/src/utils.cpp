#include "wrpn/train/utils.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

namespace wrpn::train {

void LrSchedule::validate() const {
  TORCH_CHECK_VALUE(kind == "cosine" || kind == "step" || kind == "constant",
                    "learning-rate schedule must be cosine, step or constant, got '", kind, "'");
  TORCH_CHECK_VALUE(base_lr > 0 && std::isfinite(base_lr), "learning rate must be > 0, got ",
                    base_lr);
  TORCH_CHECK_VALUE(min_lr >= 0 && min_lr <= base_lr, "min_lr must be in [0, lr], got ", min_lr);
  TORCH_CHECK_VALUE(warmup_epochs >= 0, "warm-up epochs must be >= 0, got ", warmup_epochs);
  TORCH_CHECK_VALUE(gamma > 0 && gamma <= 1, "step gamma must be in (0, 1], got ", gamma);
  for (size_t i = 0; i < milestones.size(); ++i) {
    TORCH_CHECK_VALUE(milestones[i] > 0 && (i == 0 || milestones[i] > milestones[i - 1]),
                      "step milestones must be positive and increasing");
  }
}

double LrSchedule::at(double t, int64_t total_epochs) const {
  if (warmup_epochs > 0 && t < warmup_epochs) return base_lr * (t + 1e-9) / warmup_epochs;
  if (kind == "constant") return base_lr;
  if (kind == "step") {
    double lr = base_lr;
    for (int64_t m : milestones) {
      if (t >= static_cast<double>(m)) lr *= gamma;
    }
    return lr;
  }
  const double span = std::max(1e-9, static_cast<double>(total_epochs) - warmup_epochs);
  const double p = std::clamp((t - warmup_epochs) / span, 0.0, 1.0);
  return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(M_PI * p));
}

int64_t topk_correct(const at::Tensor& logits, const at::Tensor& target, int64_t k) {
  TORCH_CHECK(logits.dim() == 2 && target.dim() == 1 && logits.size(0) == target.size(0),
              "topk_correct: expected logits [N, C] and target [N], got ", logits.sizes(), " and ",
              target.sizes());
  k = std::min<int64_t>(k, logits.size(1));
  if (logits.size(0) == 0 || k <= 0) return 0;
  const at::Tensor top = std::get<1>(logits.topk(k, 1, true, false));
  return top.eq(target.view({-1, 1})).any(1).sum().item<int64_t>();
}

Progress::Progress(std::string label, int64_t total_batches, std::FILE* out)
    : label_(std::move(label)),
      total_(total_batches),
      out_(out),
      tty_(out != nullptr && isatty(fileno(out)) != 0),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_) {}

void Progress::update(int64_t batch_size, double loss, int64_t correct) {
  ++batches_;
  images_ += batch_size;
  loss_sum_ += loss * batch_size;
  correct_ += correct;
  const auto now = std::chrono::steady_clock::now();
  if (std::chrono::duration<double>(now - last_print_).count() >= interval_s) {
    last_print_ = now;
    print(false);
  }
}

double Progress::images_per_second() const {
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return s > 0 ? images_ / s : 0.0;
}

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  }
  return buf;
}

void Progress::print(bool final) {
  if (out_ == nullptr) return;
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta =
      batches_ > 0 ? elapsed / batches_ * std::max<int64_t>(0, total_ - batches_) : 0;
  char metric[48] = "";
  if (show_accuracy) {
    std::snprintf(metric, sizeof metric, "  acc %.2f%%", 100.0 * accuracy());
  } else if (show_perplexity) {
    std::snprintf(metric, sizeof metric, "  ppl %.2f", std::exp(mean_loss()));
  }
  std::fprintf(out_, "%s%s  batch %lld/%lld  loss %.4f%s  %.0f %s/s  %s %s%s", tty_ ? "\r" : "",
               label_.c_str(), static_cast<long long>(batches_), static_cast<long long>(total_),
               mean_loss(), metric, images_per_second(), unit.c_str(), final ? "took" : "ETA",
               format_duration(final ? elapsed : eta).c_str(), tty_ && !final ? "   " : "\n");
  std::fflush(out_);
}

double Progress::finish() {
  print(true);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

}  // namespace wrpn::train
