#include "wrpn/train/distill.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace wrpn::train {

void DistillLossOptions::validate() const {
  TORCH_CHECK_VALUE(std::isfinite(alpha) && alpha >= 0,
                    "distillation loss: alpha must be finite and >= 0, got ", alpha);
  TORCH_CHECK_VALUE(std::isfinite(beta) && beta >= 0,
                    "distillation loss: beta must be finite and >= 0, got ", beta);
  TORCH_CHECK_VALUE(std::isfinite(gamma) && gamma >= 0,
                    "distillation loss: gamma must be finite and >= 0, got ", gamma);
  TORCH_CHECK_VALUE(alpha > 0 || beta > 0 || gamma > 0,
                    "distillation loss: at least one of alpha, beta, gamma must be > 0");
  TORCH_CHECK_VALUE(std::isfinite(temperature) && temperature > 0,
                    "distillation loss: temperature must be finite and > 0, got ", temperature);
}

namespace {

void check_logits(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.defined(), "distillation_loss: argument '", name,
                    "' is undefined; expected logits [N, C]");
  TORCH_CHECK_VALUE(t.dim() == 2, "distillation_loss: argument '", name,
                    "' must be logits [N, C], got shape ", t.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(t.scalar_type()), "distillation_loss: argument '", name,
                    "' must be a floating-point tensor, got ", t.scalar_type());
}

}  // namespace

DistillLoss distillation_loss_parts(const at::Tensor& teacher_logits,
                                    const at::Tensor& student_logits, const at::Tensor& targets,
                                    const DistillLossOptions& o) {
  o.validate();
  check_logits(student_logits, "student_logits");
  const int64_t n = student_logits.size(0);
  const bool need_teacher = o.alpha > 0 || o.gamma > 0;
  if (need_teacher) {
    TORCH_CHECK_VALUE(
        teacher_logits.defined(),
        "distillation_loss: argument 'teacher_logits' is undefined, but alpha = ", o.alpha,
        " and gamma = ", o.gamma, " need it; expected shape ", student_logits.sizes());
    check_logits(teacher_logits, "teacher_logits");
    TORCH_CHECK_VALUE(teacher_logits.sizes() == student_logits.sizes(),
                      "distillation_loss: argument 'teacher_logits' must have the shape of "
                      "'student_logits' ",
                      student_logits.sizes(), " (same batch and number of classes), got ",
                      teacher_logits.sizes());
  }
  const bool need_targets = o.alpha > 0 || o.beta > 0;
  if (need_targets) {
    TORCH_CHECK_VALUE(targets.defined() && targets.dim() == 1 && targets.size(0) == n,
                      "distillation_loss: argument 'targets' must be class indices of shape [", n,
                      "] (the batch of 'student_logits'), got ",
                      targets.defined() ? c10::str(targets.sizes()) : std::string("undefined"));
    TORCH_CHECK_VALUE(targets.scalar_type() == at::kLong,
                      "distillation_loss: argument 'targets' must be int64 (Long) class indices, "
                      "got ",
                      targets.scalar_type());
  }

  DistillLoss r;
  at::Tensor total;
  auto add = [&](const at::Tensor& term, double w) {
    total = total.defined() ? total + term * w : term * w;
  };
  if (o.alpha > 0) {
    r.teacher_ce = at::cross_entropy_loss(teacher_logits, targets);
    add(r.teacher_ce, o.alpha);
  }
  if (o.beta > 0) {
    r.student_ce = at::cross_entropy_loss(student_logits, targets);
    add(r.student_ce, o.beta);
  }
  if (o.gamma > 0) {
    // The teacher is the target here: no gradient flows back into it through this term.
    const double inv_t = 1.0 / o.temperature;
    const at::Tensor log_p_t = at::log_softmax(teacher_logits.detach() * inv_t, 1);
    const at::Tensor log_p_s = at::log_softmax(student_logits * inv_t, 1);
    const at::Tensor p_t = log_p_t.exp();
    if (o.kl) {
      // xlogy keeps 0 * log 0 = 0 where the teacher's probability underflows.
      const at::Tensor kl = (at::xlogy(p_t, p_t) - p_t * log_p_s).sum(1).mean();
      r.soft = kl * (o.temperature * o.temperature);
    } else {
      r.soft = -(p_t * log_p_s).sum(1).mean();
    }
    add(r.soft, o.gamma);
  }
  r.total = total;
  return r;
}

at::Tensor distillation_loss(const at::Tensor& teacher_logits, const at::Tensor& student_logits,
                             const at::Tensor& targets, const DistillLossOptions& options) {
  return distillation_loss_parts(teacher_logits, student_logits, targets, options).total;
}

}  // namespace wrpn::train
