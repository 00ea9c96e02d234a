#include <catch2/catch.hpp>
#include <torch/torch.h>
#include <wrpn/wrpn.h>

TEST_CASE("placeholder: ternary weights on hand values", "[cpu]") {
  auto q = wrpn::quantize_weight(torch::tensor({-2.0f, -0.5f, 0.5f, 0.51f}), 2);
  REQUIRE(torch::equal(q, torch::tensor({-1.0f, -0.0f, 0.0f, 1.0f})));
}
