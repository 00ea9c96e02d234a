// Tests of word-level text (wrpn/data/text.h): the tokenizer by hand values, the vocabulary,
// corpus files, batchify and the BPTT windows, and the Jane Austen corpus when it is present.

#include <torch/torch.h>
#include <unistd.h>
#include <wrpn/wrpn.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace {

using Catch::Contains;
using wrpn::data::tokenize_text;
using wrpn::data::Vocabulary;
using Tokens = std::vector<std::string>;

class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/wrpn_text_test_XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    for (const auto& f : files_) ::unlink(f.c_str());
    ::rmdir(path_.c_str());
  }
  std::string file(const std::string& name, const std::string& text) {
    const std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary) << text;
    files_.push_back(p);
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

TEST_CASE("text: the tokenizer by hand", "[text]") {
  CHECK(tokenize_text("") == Tokens{});
  CHECK(tokenize_text("\n \n\t\n") == Tokens{});
  CHECK(tokenize_text("Mr. Darcy's _very_ \"proud\" -- don't!") ==
        Tokens{"mr", ".", "darcy's", "very", "\"", "proud", "\"", "-", "-", "don't", "!", "<eop>"});
  // Apostrophes: inside a word, or a token of their own at either end.
  CHECK(tokenize_text("'Tis the boys' o'clock") ==
        Tokens{"'", "tis", "the", "boys", "'", "o'clock", "<eop>"});
  // Digits are word characters; commas split numbers; bytes >= 0x80 are letters.
  CHECK(tokenize_text("\xc2\xa3"
                      "20,000 a year; caf\xc3\xa9") == Tokens{"\xc2\xa3"
                                                              "20",
                                                              ",", "000", "a", "year", ";",
                                                              "caf\xc3\xa9", "<eop>"});
  // Paragraphs: runs of non-blank lines; any number of blank lines (spaces, tabs, CR) end one.
  CHECK(tokenize_text("One\ntwo.\n\n  \r\n\nThree\r\nfour\n") ==
        Tokens{"one", "two", ".", "<eop>", "three", "four", "<eop>"});
  CHECK(tokenize_text("no newline at the end") ==
        Tokens{"no", "newline", "at", "the", "end", "<eop>"});
  // Italic marks do not split a word, and a line of them alone is still content.
  CHECK(tokenize_text("in_deed_\n__\n") == Tokens{"indeed", "<eop>"});
  CHECK(tokenize_text("CHAPTER I.\n\n\n") == Tokens{"chapter", "i", ".", "<eop>"});
}

TEST_CASE("text: the vocabulary keeps the most frequent tokens, ties by byte order", "[text]") {
  const Tokens t = {"b", "a", "c", "b", "c", "d", "c", "a", "e"};
  // counts: c 3, a 2, b 2, d 1, e 1
  const Vocabulary v = Vocabulary::build(t, 3);
  CHECK(v.tokens() == Tokens{"<unk>", "c", "a", "b"});
  CHECK(v.size() == 4);
  CHECK(v.id("c") == 1);
  CHECK(v.id("d") == 0);
  CHECK(v.token(3) == "b");
  CHECK(torch::equal(v.encode({"a", "zz", "c"}), torch::tensor({2, 0, 1}, torch::kLong)));
  const Vocabulary all = Vocabulary::build(t, 100);
  CHECK(all.tokens() == Tokens{"<unk>", "c", "a", "b", "d", "e"});
  // "<unk>" in the text is not counted as a word of its own.
  CHECK(Vocabulary::build({"<unk>", "<unk>", "x"}, 5).tokens() == Tokens{"<unk>", "x"});
  CHECK(Vocabulary::from_tokens(v.tokens()).tokens() == v.tokens());
  CHECK(Vocabulary::from_tokens(v.tokens()).fingerprint() == v.fingerprint());
  CHECK(all.fingerprint() != v.fingerprint());
  CHECK(v.fingerprint().size() == 16);
  CHECK_THROWS_WITH(v.token(4), Contains("id 4 out of range [0, 4)"));
  CHECK_THROWS_WITH(v.token(-1), Contains("out of range"));
  CHECK_THROWS_WITH(Vocabulary::build(t, 0), Contains("max_size must be >= 1"));
  CHECK_THROWS_WITH(Vocabulary::from_tokens({"a"}), Contains("first token must be"));
  CHECK_THROWS_WITH(Vocabulary::from_tokens({"<unk>", "a", "a"}), Contains("appears twice"));
}

TEST_CASE("text: a corpus from files takes its vocabulary from the training split", "[text]") {
  TempDir d;
  const auto a = d.file("a.txt", "the cat sat.\n\nthe dog sat.\n");
  const auto b = d.file("b.txt", "the cat ran\n");
  const auto v = d.file("v.txt", "the bird sat\n");
  const auto t = d.file("t.txt", "a cat\n");
  const auto c = wrpn::data::load_text_corpus({a, b}, v, t, 4);
  // counts: the 3, cat 2, sat 2, . 2, <eop> 3, dog 1, ran 1 -> top 4: <eop>, the, ., cat
  CHECK(c.vocab.tokens() == Tokens{"<unk>", "<eop>", "the", ".", "cat"});
  CHECK(c.train.numel() == 14);
  CHECK(torch::equal(c.valid, torch::tensor({2, 0, 0, 1}, torch::kLong)));
  CHECK(torch::equal(c.test, torch::tensor({0, 4, 1}, torch::kLong)));
  CHECK(c.valid_unk == Approx(0.5));
  CHECK(c.test_unk == Approx(1.0 / 3));
  CHECK(c.train_unk == Approx(4.0 / 14));  // sat, sat, dog, ran
}

TEST_CASE("text: missing, empty and non-regular corpus files are named", "[text]") {
  TempDir d;
  const auto a = d.file("a.txt", "words here\n");
  const auto empty = d.file("empty.txt", "\n\n");
  using wrpn::data::DatasetError;
  CHECK_THROWS_AS(wrpn::data::load_text_corpus({a}, d.path() + "/nope.txt", a, 10), DatasetError);
  CHECK_THROWS_WITH(wrpn::data::load_text_corpus({a}, d.path() + "/nope.txt", a, 10),
                    Contains("nope.txt' is missing") && Contains("fetch_data.sh"));
  CHECK_THROWS_WITH(wrpn::data::load_text_corpus({empty}, a, a, 10),
                    Contains("empty.txt' holds no tokens"));
  CHECK_THROWS_WITH(wrpn::data::load_text_corpus({d.path()}, a, a, 10), Contains("directory"));
  CHECK_THROWS_WITH(wrpn::data::load_text_corpus({}, a, a, 10), Contains("no training files"));
  CHECK_THROWS_WITH(wrpn::data::load_austen(d.path()),
                    Contains("sensesensibility.txt' is missing"));
}

TEST_CASE("text: batchify and BPTT windows", "[text]") {
  const auto ids = torch::arange(23, torch::kLong);
  const auto data = wrpn::data::batchify(ids, 4);  // 5 rows of 4 columns, 3 tokens dropped
  REQUIRE(data.sizes() == torch::IntArrayRef({5, 4}));
  // Column b is the contiguous stream b * 5 .. b * 5 + 4.
  CHECK(torch::equal(data.select(1, 2), torch::arange(10, 15, torch::kLong)));
  CHECK(torch::equal(data[0], torch::tensor({0, 5, 10, 15}, torch::kLong)));
  auto [x, y] = wrpn::data::bptt_window(data, 0, 3);
  CHECK(x.size(0) == 3);
  CHECK(torch::equal(y, data.slice(0, 1, 4)));
  std::tie(x, y) = wrpn::data::bptt_window(data, 3, 3);  // only one step left
  CHECK(x.size(0) == 1);
  CHECK(torch::equal(x[0], data[3]));
  CHECK(torch::equal(y[0], data[4]));
  CHECK_THROWS_WITH(wrpn::data::bptt_window(data, 4, 3), Contains("start 4 out of range [0, 4)"));
  CHECK_THROWS_WITH(wrpn::data::bptt_window(data, 0, 0), Contains("bptt must be >= 1"));
  CHECK_THROWS_WITH(wrpn::data::batchify(ids, 12), Contains("cannot fill 2 rows"));
  CHECK_THROWS_WITH(wrpn::data::batchify(ids, 0), Contains("batch must be >= 1"));
  CHECK_THROWS_WITH(wrpn::data::batchify(ids.to(torch::kInt), 2), Contains("int64 token ids"));
}

TEST_CASE("text: the Jane Austen corpus from its real files", "[text][austen]") {
  const char* src = std::getenv("WRPN_SOURCE_DIR");
  const std::string dir = std::string(src != nullptr ? src : ".") + "/data/austen";
  if (!wrpn::fs::is_regular_file(dir + "/persuasion.txt")) {
    std::printf(
        "WRPN_SKIP: %s/persuasion.txt is missing (scripts/fetch_data.sh extracts it from "
        "Debian's r-cran-janeaustenr)\n",
        dir.c_str());
    return;
  }
  const auto c = wrpn::data::load_austen(dir);
  CHECK(c.vocab.size() == 10001);
  CHECK(c.vocab.token(0) == "<unk>");
  INFO("train " << c.train.numel() << " valid " << c.valid.numel() << " test " << c.test.numel()
                << " unk " << c.train_unk << " / " << c.valid_unk << " / " << c.test_unk);
  // Four novels of 120k-190k words each, plus punctuation and paragraph marks.
  CHECK(c.train.numel() > 600000);
  CHECK(c.train.numel() < 1000000);
  CHECK(c.valid.numel() > 80000);
  CHECK(c.test.numel() > 80000);
  CHECK(c.train_unk < 0.03);
  CHECK(c.test_unk < 0.05);
  // The most frequent tokens of English prose.
  CHECK(c.vocab.id(",") <= 5);
  CHECK(c.vocab.id("the") <= 5);
  CHECK(c.vocab.id("elizabeth") > 0);
  // Persuasion starts with its title page.
  const auto head = c.test.slice(0, 0, 6);
  Tokens first;
  for (int64_t i = 0; i < 6; ++i) first.push_back(c.vocab.token(head[i].item<int64_t>()));
  CHECK(first == Tokens{"persuasion", "<eop>", "by", "<eop>", "jane", "austen"});
}

}  // namespace
