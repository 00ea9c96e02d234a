#pragma once
/// Word-level text for language models: the tokenizer, the vocabulary, and the Jane Austen
/// benchmark (six novels from Debian's r-cran-janeaustenr, extracted by scripts/fetch_data.sh).
///
/// The tokenizer, exactly (so that others can reproduce the numbers):
///   1. The text is split into lines at '\n' (a trailing '\r' is dropped). A paragraph is a
///      maximal run of lines that hold a byte other than space or tab; every paragraph's tokens
///      are followed by the token "<eop>".
///   2. ASCII letters are lower-cased; '_' (the source's italics marks) is dropped; bytes >= 0x80
///      (UTF-8 sequences such as "£" or "é") count as letters.
///   3. A word is a maximal run of letters and digits, where an apostrophe (') between two such
///      characters belongs to the word ("don't", "sister's"). Every other byte that is not a
///      space or tab ('.', ',', '"', a leading or trailing apostrophe, each '-' of "--") is a
///      token of its own.
/// The vocabulary: the `max_size` most frequent tokens of the training text (ties broken by byte
/// order) after "<unk>" = id 0; any other token maps to "<unk>".

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace wrpn::data {

/// The end-of-paragraph token.
inline constexpr const char* kEndOfParagraph = "<eop>";
/// The out-of-vocabulary token, id 0.
inline constexpr const char* kUnknownToken = "<unk>";

/// The tokens of `text` by the rules above.
std::vector<std::string> tokenize_text(std::string_view text);

/// Token <-> id, id 0 = "<unk>".
class Vocabulary {
 public:
  /// Just "<unk>".
  Vocabulary();
  /// "<unk>" and the `max_size` most frequent of `tokens` (ties by byte order; max_size >= 1).
  static Vocabulary build(const std::vector<std::string>& tokens, int64_t max_size);
  /// From the tokens in id order (the first must be "<unk>", no repeats): the inverse of tokens().
  static Vocabulary from_tokens(std::vector<std::string> tokens);

  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  /// The id of `token`, 0 when it is not in the vocabulary.
  int64_t id(const std::string& token) const;
  /// The token of `id` (0 <= id < size()); throws otherwise.
  const std::string& token(int64_t id) const;
  const std::vector<std::string>& tokens() const { return tokens_; }
  /// Ids of `tokens` as an int64 tensor [N].
  torch::Tensor encode(const std::vector<std::string>& tokens) const;
  /// A short fingerprint of the token list (FNV-1a 64 of the tokens joined by '\n', hex), for
  /// checkpoints: a model trained with one vocabulary refuses another.
  std::string fingerprint() const;

 private:
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int64_t> ids_;
};

/// A tokenized corpus: the vocabulary (from the training split) and every split as ids [N].
struct TextCorpus {
  Vocabulary vocab;
  torch::Tensor train, valid, test;
  /// Fraction of each split's tokens that are "<unk>".
  double train_unk = 0, valid_unk = 0, test_unk = 0;
};

/// A corpus from files: training files (concatenated in order), one validation and one test file.
TextCorpus load_text_corpus(const std::vector<std::string>& train_files,
                            const std::string& valid_file, const std::string& test_file,
                            int64_t vocab_size);

/// The Jane Austen benchmark in `dir` (scripts/fetch_data.sh writes data/austen/): train on
/// sensesensibility, prideprejudice, mansfieldpark and emma (in this order), validate on
/// northangerabbey, test on persuasion (each "<name>.txt"); vocabulary of `vocab_size` words.
/// A missing file is a DatasetError that says how to fetch the data.
TextCorpus load_austen(const std::string& dir, int64_t vocab_size = 10000);

/// The novels of the benchmark, in the order train..., valid, test.
const std::vector<std::string>& austen_novels();

/// ids [N] cut into `batch` equal columns: [N / batch, batch] (the tail that does not fill a row
/// is dropped). Throws when N < 2 * batch (no step would have a target).
torch::Tensor batchify(const torch::Tensor& ids, int64_t batch);

/// The truncated-BPTT window at row `start` of a batchified [T, B] stream: inputs
/// rows [start, start + len) and targets rows [start + 1, start + 1 + len), len = min(bptt,
/// T - 1 - start). Throws unless 0 <= start < T - 1 and bptt >= 1.
std::pair<torch::Tensor, torch::Tensor> bptt_window(const torch::Tensor& data, int64_t start,
                                                    int64_t bptt);

}  // namespace wrpn::data
