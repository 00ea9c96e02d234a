// The word-level tokenizer, the vocabulary and the Jane Austen corpus (wrpn/data/text.h).

#include "wrpn/data/text.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "wrpn/data/common.h"
#include "wrpn/util/fs.h"
#include "wrpn/util/text.h"

namespace wrpn::data {
namespace {

bool is_word_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

bool is_blank(unsigned char c) { return c == ' ' || c == '\t' || c == '\r'; }

char lower(unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c); }

/// Appends the tokens of one line; returns whether it held any non-blank byte.
bool tokenize_line(std::string_view line, std::vector<std::string>& out) {
  bool content = false;
  std::string word;
  const auto flush = [&] {
    if (!word.empty()) out.push_back(std::move(word));
    word.clear();
  };
  for (size_t i = 0; i < line.size(); ++i) {
    const auto c = static_cast<unsigned char>(line[i]);
    if (is_blank(c)) {
      flush();
      continue;
    }
    content = true;
    if (c == '_') continue;  // italics marks: dropped, and they do not split a word
    if (is_word_byte(c)) {
      word.push_back(lower(c));
    } else if (c == '\'' && !word.empty() && i + 1 < line.size() &&
               is_word_byte(static_cast<unsigned char>(line[i + 1]))) {
      word.push_back('\'');
    } else {
      flush();
      out.emplace_back(1, static_cast<char>(c));
    }
  }
  flush();
  return content;
}

uint64_t fnv1a(uint64_t h, std::string_view s) {
  for (const unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

/// The largest text file the corpus reader accepts.
constexpr int64_t kMaxTextBytes = int64_t{1} << 30;

std::string read_text(const std::string& path) {
  if (!fs::path_exists(path)) {
    throw DatasetError("text file '" + path +
                       "' is missing (scripts/fetch_data.sh writes the Jane Austen novels to "
                       "data/austen/)");
  }
  try {
    fs::regular_file_size(path, "text file '" + path + "'");
    return fs::read_file(path, "text file '" + path + "'", kMaxTextBytes);
  } catch (const c10::Error& e) {
    throw DatasetError(e.what_without_backtrace());
  }
}

double unk_fraction(const torch::Tensor& ids) {
  return ids.numel() == 0 ? 0.0 : ids.eq(0).to(torch::kDouble).mean().item<double>();
}

}  // namespace

std::vector<std::string> tokenize_text(std::string_view text) {
  std::vector<std::string> out;
  bool in_paragraph = false;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    const bool content = tokenize_line(text.substr(start, end - start), out);
    if (!content && in_paragraph) out.emplace_back(kEndOfParagraph);
    in_paragraph = content;
    if (end == text.size()) break;
    start = end + 1;
  }
  if (in_paragraph) out.emplace_back(kEndOfParagraph);
  return out;
}

Vocabulary::Vocabulary() : tokens_{kUnknownToken}, ids_{{kUnknownToken, 0}} {}

Vocabulary Vocabulary::build(const std::vector<std::string>& tokens, int64_t max_size) {
  TORCH_CHECK(max_size >= 1, "Vocabulary::build: max_size must be >= 1, got ", max_size);
  std::map<std::string, int64_t> counts;  // byte order
  for (const auto& t : tokens) {
    if (t != kUnknownToken) ++counts[t];
  }
  std::vector<std::pair<std::string, int64_t>> ranked(counts.begin(), counts.end());
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  if (static_cast<int64_t>(ranked.size()) > max_size) ranked.resize(max_size);
  std::vector<std::string> list{kUnknownToken};
  for (auto& r : ranked) list.push_back(std::move(r.first));
  return from_tokens(std::move(list));
}

Vocabulary Vocabulary::from_tokens(std::vector<std::string> tokens) {
  TORCH_CHECK(!tokens.empty() && tokens[0] == kUnknownToken,
              "Vocabulary: the first token must be \"<unk>\"");
  Vocabulary v;
  v.tokens_ = std::move(tokens);
  v.ids_.clear();
  for (size_t i = 0; i < v.tokens_.size(); ++i) {
    const bool fresh = v.ids_.emplace(v.tokens_[i], static_cast<int64_t>(i)).second;
    TORCH_CHECK(fresh, "Vocabulary: token ", util::printable(v.tokens_[i]), " appears twice");
  }
  return v;
}

int64_t Vocabulary::id(const std::string& token) const {
  const auto it = ids_.find(token);
  return it == ids_.end() ? 0 : it->second;
}

const std::string& Vocabulary::token(int64_t id) const {
  TORCH_CHECK(id >= 0 && id < size(), "Vocabulary: id ", id, " out of range [0, ", size(), ")");
  return tokens_[static_cast<size_t>(id)];
}

torch::Tensor Vocabulary::encode(const std::vector<std::string>& tokens) const {
  torch::Tensor out = torch::empty({static_cast<int64_t>(tokens.size())}, torch::kLong);
  int64_t* p = out.data_ptr<int64_t>();
  for (size_t i = 0; i < tokens.size(); ++i) p[i] = id(tokens[i]);
  return out;
}

std::string Vocabulary::fingerprint() const {
  uint64_t h = 14695981039346656037ull;
  for (const auto& t : tokens_) h = fnv1a(fnv1a(h, t), "\n");
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

TextCorpus load_text_corpus(const std::vector<std::string>& train_files,
                            const std::string& valid_file, const std::string& test_file,
                            int64_t vocab_size) {
  TORCH_CHECK(!train_files.empty(), "load_text_corpus: no training files");
  TORCH_CHECK(vocab_size >= 1, "load_text_corpus: vocab_size must be >= 1, got ", vocab_size);
  std::vector<std::string> train;
  for (const auto& f : train_files) {
    auto t = tokenize_text(read_text(f));
    if (t.empty()) throw DatasetError("text file '" + f + "' holds no tokens");
    train.insert(train.end(), std::make_move_iterator(t.begin()), std::make_move_iterator(t.end()));
  }
  TextCorpus c;
  c.vocab = Vocabulary::build(train, vocab_size);
  c.train = c.vocab.encode(train);
  for (const auto& [file, ids] : {std::pair{&valid_file, &c.valid}, {&test_file, &c.test}}) {
    const auto t = tokenize_text(read_text(*file));
    if (t.empty()) throw DatasetError("text file '" + *file + "' holds no tokens");
    *ids = c.vocab.encode(t);
  }
  c.train_unk = unk_fraction(c.train);
  c.valid_unk = unk_fraction(c.valid);
  c.test_unk = unk_fraction(c.test);
  return c;
}

const std::vector<std::string>& austen_novels() {
  static const std::vector<std::string> novels = {"sensesensibility", "prideprejudice",
                                                  "mansfieldpark",    "emma",
                                                  "northangerabbey",  "persuasion"};
  return novels;
}

TextCorpus load_austen(const std::string& dir, int64_t vocab_size) {
  const auto& n = austen_novels();
  const auto file = [&](const std::string& name) { return fs::join(dir, name + ".txt"); };
  return load_text_corpus({file(n[0]), file(n[1]), file(n[2]), file(n[3])}, file(n[4]), file(n[5]),
                          vocab_size);
}

torch::Tensor batchify(const torch::Tensor& ids, int64_t batch) {
  TORCH_CHECK(batch >= 1, "batchify: batch must be >= 1, got ", batch);
  TORCH_CHECK(ids.dim() == 1 && ids.scalar_type() == torch::kLong,
              "batchify: expected int64 token ids [N], got ", ids.scalar_type(), " ", ids.sizes());
  const int64_t rows = ids.size(0) / batch;
  TORCH_CHECK(rows >= 2, "batchify: ", ids.size(0), " tokens cannot fill 2 rows of ", batch,
              " columns (a step needs a target)");
  return ids.slice(0, 0, rows * batch).view({batch, rows}).t().contiguous();
}

std::pair<torch::Tensor, torch::Tensor> bptt_window(const torch::Tensor& data, int64_t start,
                                                    int64_t bptt) {
  TORCH_CHECK(data.dim() == 2, "bptt_window: expected a batchified [T, B] stream, got ",
              data.sizes());
  TORCH_CHECK(bptt >= 1, "bptt_window: bptt must be >= 1, got ", bptt);
  const int64_t T = data.size(0);
  TORCH_CHECK(start >= 0 && start < T - 1, "bptt_window: start ", start, " out of range [0, ",
              T - 1, ")");
  const int64_t len = std::min(bptt, T - 1 - start);
  return {data.slice(0, start, start + len), data.slice(0, start + 1, start + 1 + len)};
}

}  // namespace wrpn::data
