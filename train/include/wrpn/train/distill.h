#pragma once
/// Knowledge distillation as in Apprentice (Mishra & Marr, arXiv 1711.05852): a full-precision
/// teacher's output distribution guides a low-precision student.
///
///   L = alpha * CE(y, p_T) + beta * CE(y, p_S) + gamma * CE(p_T, p_S)
///
/// The first two terms are the usual cross-entropies against the labels y (softmax at T = 1); the
/// third is the soft term -mean_n sum_c p_T log p_S with p = softmax(logits / T) and the teacher's
/// distribution as the target. With `kl` the soft term is Hinton's KL(p_T || p_S) * T^2 instead
/// (the same gradient for the student up to the T^2 factor; zero when the two agree).
///
/// Gradients: the alpha term back-propagates into the teacher (Apprentice scheme A trains the
/// teacher with it); the soft term treats the teacher as a fixed target (its logits are
/// detached there), so the student never pulls the teacher towards itself.

#include <ATen/core/Tensor.h>

namespace wrpn::train {

/// Weights and temperature of the distillation loss; the defaults are the paper's best
/// (alpha = 1, beta = 0.5, gamma = 0.5, T = 1).
struct DistillLossOptions {
  /// Weight of CE(y, p_T), the teacher's own loss (trains the teacher in scheme A).
  double alpha = 1.0;
  /// Weight of CE(y, p_S), the student's loss against the labels.
  double beta = 0.5;
  /// Weight of the soft term CE(p_T, p_S) (or the KL form).
  double gamma = 0.5;
  /// Softmax temperature of the soft term, > 0.
  double temperature = 1.0;
  /// Soft term as KL(p_T || p_S) * T^2 instead of the cross-entropy.
  bool kl = false;

  /// Throws c10::Error naming the first bad field: weights must be finite and >= 0 with at
  /// least one > 0, the temperature finite and > 0.
  void validate() const;
};

/// The loss and its unweighted terms. A term whose weight is 0 is not computed: its tensor is
/// undefined.
struct DistillLoss {
  /// alpha * teacher_ce + beta * student_ce + gamma * soft (a scalar).
  at::Tensor total;
  /// CE(y, p_T), mean over the batch.
  at::Tensor teacher_ce;
  /// CE(y, p_S), mean over the batch.
  at::Tensor student_ce;
  /// CE(p_T, p_S) at temperature T, or KL(p_T || p_S) * T^2 with `kl`; mean over the batch.
  at::Tensor soft;
};

/// The distillation loss of logits [N, C] (teacher and student, same shape and floating dtype)
/// against class indices `targets` (int64 [N]). `teacher_logits` may be undefined when alpha and
/// gamma are 0. Throws c10::Error naming the argument and the expected shape or dtype.
DistillLoss distillation_loss_parts(const at::Tensor& teacher_logits,
                                    const at::Tensor& student_logits, const at::Tensor& targets,
                                    const DistillLossOptions& options = {});

/// distillation_loss_parts(...).total.
at::Tensor distillation_loss(const at::Tensor& teacher_logits, const at::Tensor& student_logits,
                             const at::Tensor& targets, const DistillLossOptions& options = {});

}  // namespace wrpn::train
