#pragma once
/// What a training run depends on (TrainOptions), and the one table that names each option
/// once: its key in options.json and --config files, its command-line flag and its help. The
/// JSON reader and writer here and the programs' flags are all driven by that table.

#include <wrpn/precision.h>
#include <wrpn/train/distill.h>
#include <wrpn/train/utils.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <variant>
#include <vector>

namespace wrpn::train {

/// Everything a training run depends on. Defaults train on a laptop CPU.
struct TrainOptions {
  // Model.
  std::string model = "resnet20";
  PrecisionConfig precision = PrecisionConfig::make(4, 4, 2.0);
  /// Weight init: "auto" (He for 3..16-bit weights; quant_aware at 1-2 bits, where He leaves
  /// every weight in the zero band, and for fp32), or one of quant_aware, he, torch_default.
  std::string init = "auto";
  // Data.
  std::string dataset = "digits";
  std::string data_root;     ///< empty: data/<dataset> ($WRPN_DATA_DIR/<dataset>)
  bool augment = true;       ///< random crop (+ flip except on digits)
  int64_t image_size = 224;  ///< folder datasets only
  int64_t limit_train = 0;   ///< use only the first N training images (0: all)
  int64_t limit_test = 0;    ///< use only the first N test images (0: all)
  int64_t workers = 2;       ///< threads that decode folder images
  // Optimisation.
  int64_t epochs = 12;
  int64_t batch_size = 64;
  int64_t eval_batch_size = 256;
  LrSchedule schedule{"cosine", 0.1, 0.0, 1.0, {}, 0.1};
  double momentum = 0.9;
  bool nesterov = false;
  double weight_decay = 5e-4;
  double label_smoothing = 0.0;
  /// Learning-rate multiplier m for the weights of WRPN-quantized convs and FCs (2..16 bits),
  /// whose weight decay is divided by m: "auto" (per layer nn::matched_lr_multiplier, the
  /// SGD dynamics of the fp32 twin: 1 for He-drawn weights, the squared ratio of the draws'
  /// spreads for quant_aware ones; 1 in distillation scheme C), or a positive number for every
  /// such layer. A BatchNorm
  /// follows each conv, so SGD's effective step on a conv's weight is about lr / |w|^2.
  std::string quantized_lr_mult = "auto";
  /// Quantized convs and FCs save their k-bit input as packed codes for the backward (the same
  /// gradients bit for bit, less memory); false saves the float input as before.
  bool packed_activations = true;
  /// Also leave out each quantized conv's output that its BatchNorm saves, recomputing it in
  /// the backward (one more conv forward a step; the same gradients on the CPU).
  bool recompute_bn_input = false;
  // Distillation (Apprentice, arXiv 1711.05852).
  /// "" (none), "A" (teacher and student trained jointly from scratch), "B" (frozen pretrained
  /// teacher, student from scratch) or "C" (student starts from trained fp32 weights, frozen
  /// teacher).
  std::string distill_scheme;
  /// A checkpoint path (its model is the teacher) or, for scheme A, a zoo model name built with
  /// teacher_width / teacher_weight_bits / teacher_act_bits. An existing file wins over a name.
  std::string teacher;
  double teacher_width = 1.0;
  int64_t teacher_weight_bits = 32;
  int64_t teacher_act_bits = 32;
  /// Scheme C: the checkpoint the student's weights start from (empty: the teacher checkpoint).
  std::string student_init;
  /// Scheme C: fit the loaded fp32 weights to the student's weight quantizer
  /// (nn::fit_weights_to_quantizer_) before training.
  bool student_init_rescale = true;
  /// Loss weights and temperature.
  DistillLossOptions distill;
  // Machine.
  uint64_t seed = 0;
  std::string device = "auto";  ///< auto (CUDA when available), cpu, cuda, cuda:N
  bool amp = false;             ///< bf16 autocast on CUDA
  int64_t threads = 0;          ///< CPU threads (0: LibTorch's default)
  /// Data-parallel runs (the programs under torchrun; see <wrpn/train/distributed.h>): the
  /// backend ("auto": NCCL on CUDA, Gloo on CPU) and the seconds a rank waits for the others.
  /// Not recorded in options.json: they do not change the result.
  std::string dist_backend = "auto";
  double dist_timeout = 300.0;
  // Output.
  std::string run_dir = "runs/latest";
  /// Continue from run_dir/last.ckpt; an error when there is none.
  bool resume = false;
  /// Continue from run_dir/last.ckpt when there is one, else start fresh (what torchrun's
  /// restarts and sweeps that re-run themselves need).
  bool auto_resume = false;
  /// Let a fresh run replace the previous run's files in run_dir (without it a fresh run into a
  /// directory that holds a run is refused).
  bool overwrite = false;
  int64_t stop_after = 0;  ///< stop (resumably) once this many epochs are done (0: never)
  bool quiet = false;

  /// Throws c10::Error naming the first bad option and what it expects.
  void validate() const;
  /// The options with a JSON key in train_option_table() (what options.json holds).
  nlohmann::json to_json() const;
  /// Reads options from JSON with the keys to_json() writes (missing keys keep their values);
  /// unknown keys and values of the wrong JSON type throw, naming the key.
  void update_from_json(const nlohmann::json& j);

  /// The weight init a run uses: `init`, or auto_weight_init() of the weight bits for "auto".
  std::string resolved_init() const;
  /// The number quantized_lr_mult gives, or 0 for "auto"; throws for anything else.
  double fixed_quantized_lr_mult() const;
};

/// What init "auto" means at `weight_bits`: "he" for 3..16 bits, else "quant_aware".
std::string auto_weight_init(int64_t weight_bits);

/// True when `teacher` names a zoo model rather than a checkpoint (an existing file wins).
bool teacher_is_zoo_model(const std::string& teacher);

/// Where an option's value lives: one alternative per value type.
using OptionField = std::variant<std::string*, int64_t*, uint64_t*, double*, bool*,
                                 std::vector<int64_t>*, PrecisionConfig*>;

/// The part of a program's help an option is listed under.
enum class OptionGroup { kModel, kData, kOptimization, kDistillation, kMachine, kOutput };

/// One option, written once: what options.json calls it, what the command line calls it, and
/// what it means.
struct OptionDescriptor {
  /// Key in options.json and --config files; empty for options a run does not record (resume,
  /// stop_after, quiet).
  std::string key;
  /// Command-line flag ("--epochs"). For a bool, "--no-..." means the flag sets false. Empty for
  /// precision, which the precision flag group (--width, --weight-bits, ...) sets.
  std::string flag;
  std::string help;
  OptionGroup group;
  /// The field in `o`.
  OptionField (*field)(TrainOptions& o);
  /// The allowed values of a string option for the command line (empty: any).
  std::vector<std::string> choices = {};
  /// A string option that JSON may also give as a number (quantized_lr_mult).
  bool number_as_text = false;

  /// True for a bool flag whose presence sets false ("--no-augment").
  bool negated() const { return flag.rfind("--no-", 0) == 0; }
};

/// Every TrainOptions option, in the order the programs' help lists them.
const std::vector<OptionDescriptor>& train_option_table();

/// The descriptor whose JSON key (or, failing that, flag) is `name`; throws when there is none.
const OptionDescriptor& train_option(const std::string& name);

}  // namespace wrpn::train
