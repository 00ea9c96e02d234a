#pragma once
/// The pieces behind wrpn_analyze: run a checkpoint's model over real batches under
/// wrpn::analysis::ModelAnalyzer, and print the per-layer range and sparsity table.

#include <wrpn/analysis.h>
#include <wrpn/models/classifier.h>

#include <cstdint>
#include <string>
#include <vector>

namespace wrpn::app {

/// What to analyse and on which data.
struct AnalyzeRequest {
  std::string checkpoint;
  std::string dataset;    ///< empty: the one the checkpoint was trained on (else digits)
  std::string data_root;  ///< empty: the training run's, else data/<dataset>
  std::string split = "test";
  std::string device = "auto";
  int64_t batches = 8;
  int64_t batch_size = 64;
  int64_t image_size = 224;  ///< folder datasets: crop size (default: the training run's)
  bool image_size_given = false;
  /// Seed of the random choice of images (and of the percentile samples).
  uint64_t seed = 0;
  analysis::AnalysisOptions options;
};

/// A finished analysis and what it ran on.
struct AnalyzeResult {
  analysis::ModelAnalysis analysis;
  models::ModelSpec spec;
  std::string dataset;
  std::string split;
  std::string device;
  int64_t images = 0;
};

/// Loads the checkpoint, draws request.batches batches of distinct images at random (seeded)
/// from the split, without augmentation, and observes the model on them in eval mode.
AnalyzeResult analyze_checkpoint(const AnalyzeRequest& request);

/// "0.1,1,50,99,99.9" -> {0.1, 1, 50, 99, 99.9}; throws naming the bad item.
std::vector<double> parse_percentiles(const std::string& text);

/// The terminal table: one row per layer, then the totals.
std::string format_analysis_table(const analysis::ModelAnalysis& a);

}  // namespace wrpn::app
