// Loupe's kept-path attention on the CPU: one pass over each query row's visible keys (flash-style,
// an online softmax over key tiles) that gives what the analysis keeps of a layer, and never holds
// more than one tile of scores per thread:
//   the attention output ([row, head, d_v]), each row's log-denominator log Z and entropy (summed as
//   p (s - running max), so no large logit cancels), and each row's largest score in every thumbnail column bin.
// The scores are the rule's (attention_rule.py): scaling, GQA groups, one visible interval [lo, hi)
// per row, soft-capping, sinks; the query rows may be fewer than the T keys. Products go through BLAS (sgemm_, as libtorch_cpu exports it), a tile at a time;
// the tasks (a head's block of query rows each) through ATen's parallel_for. Built by fused.py.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

// BLAS' sgemm (column-major), as libtorch_cpu exports it from the MKL it is built with
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
                       const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);

namespace {

// c [n, m] (row-major) = alpha * op(a) op(b) + beta * c, in BLAS' column-major terms: c^T [m, n]
inline void gemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const int m_ = static_cast<int>(m), n_ = static_cast<int>(n), k_ = static_cast<int>(k);
  const int lda_ = static_cast<int>(lda), ldb_ = static_cast<int>(ldb), ldc_ = static_cast<int>(ldc);
  sgemm_(&transa, &transb, &m_, &n_, &k_, &alpha, a, &lda_, b, &ldb_, &beta, c, &ldc_);
}

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Sixteen floats, in the widest registers the compiler targets (one AVX-512 register, two AVX2 ones):
// GCC's vector extensions, so the hot loops are vectorized on any x86 or ARM host the JIT builds for.
typedef float Floats __attribute__((vector_size(64)));
typedef int32_t Ints __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;

inline Floats load(const float* p) {
  Floats v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, Floats v) { std::memcpy(p, &v, sizeof v); }
inline Floats splat(float x) { return Floats{} + x; }
inline Floats vmax(Floats a, Floats b) { return a > b ? a : b; }

// e^x for x <= 0 (a score minus its row's running maximum): x = n ln2 + r, |r| <= ln2 / 2, e^r by
// Cephes' expf polynomial (about 1 ulp), 2^n through the exponent bits. Below -64 it is 0: a weight
// under 1.6e-28 of the row's largest adds nothing to a float32 sum, and its products would be
// denormal (slow).
inline Floats exp_nonpositive(Floats x) {
  const Floats clamped = vmax(x, splat(-64.0f));
  const Floats shifted = clamped * 1.44269504088896341f + 12582912.0f;  // round to nearest: 1.5 * 2^23
  const Floats n = shifted - 12582912.0f;
  const Floats r = clamped - n * 0.693359375f + n * 2.12194440e-4f;
  Floats y = splat(1.9875691500e-4f);
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const Ints bits = (__builtin_convertvector(n, Ints) + 127) << 23;
  Floats scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x < -64.0f ? splat(0.0f) : (x == x ? y * scale : x);  // a NaN score stays NaN, as in eager attention
}

inline float exp_nonpositive(float x) {
  float lane[kLanes] = {x};
  return exp_nonpositive(load(lane))[0];
}

// the largest of s[from, to)
inline float max_of(const float* s, int64_t from, int64_t to) {
  float best = kNegInf;
  int64_t j = from;
  if (to - from >= kLanes) {
    Floats acc = load(s + j);
    for (j += kLanes; j + kLanes <= to; j += kLanes) acc = vmax(acc, load(s + j));
    for (int64_t lane = 0; lane < kLanes; ++lane) best = std::max(best, acc[lane]);
  }
  for (; j < to; ++j) best = std::max(best, s[j]);
  return best;
}

// s[from, to) becomes e^(s - peak); returns (sum of those, sum of each times its s - peak)
inline std::pair<float, float> exp_in_place(float* s, int64_t from, int64_t to, float peak) {
  Floats total{}, weighted{};
  int64_t j = from;
  for (; j + kLanes <= to; j += kLanes) {
    const Floats x = load(s + j) - peak, p = exp_nonpositive(x);
    total += p;
    weighted += p * x;
    store(s + j, p);
  }
  float sum = 0.0f, sum_px = 0.0f;
  for (int64_t lane = 0; lane < kLanes; ++lane) sum += total[lane], sum_px += weighted[lane];
  for (; j < to; ++j) {
    const float x = s[j] - peak, p = exp_nonpositive(x);
    sum += p;
    sum_px += p * x;
    s[j] = p;
  }
  return {sum, sum_px};
}

}  // namespace

std::vector<at::Tensor> kept_attention(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, const at::Tensor& lo,
    const at::Tensor& hi, double scaling, double softcap, const at::Tensor& sinks,
    const at::Tensor& bin_start, const at::Tensor& bin_end, int64_t block_rows, int64_t tile_keys) {
  TORCH_CHECK(query.dim() == 3 && key.dim() == 3 && value.dim() == 3, "query, key, value: [head, T, d]");
  TORCH_CHECK(query.scalar_type() == at::kFloat && key.scalar_type() == at::kFloat && value.scalar_type() == at::kFloat,
              "float32 only");
  TORCH_CHECK(query.stride(2) == 1 && key.stride(2) == 1 && value.stride(2) == 1, "each row's features contiguous");
  const int64_t n_heads = query.size(0), n_queries = query.size(1), n_pos = key.size(1), d = query.size(2);
  const int64_t n_kv = key.size(0), dv = value.size(2), n_bins = bin_start.size(0);
  TORCH_CHECK(n_kv > 0 && n_heads % n_kv == 0, "query heads must be a multiple of key heads");
  TORCH_CHECK(value.size(1) == n_pos && key.size(2) == d && value.size(0) == n_kv, "shapes");
  TORCH_CHECK(lo.numel() == n_queries && hi.numel() == n_queries && bin_end.numel() == n_bins, "one interval per row");
  const int64_t groups = n_heads / n_kv;
  const bool capped = softcap > 0;
  const bool sunk = sinks.numel() > 0;
  TORCH_CHECK(!sunk || sinks.numel() == n_heads, "one sink per head");
  TORCH_CHECK(block_rows > 0 && tile_keys > 0 && n_bins > 0, "positive block sizes and bins");

  auto opts = query.options();
  at::Tensor out = at::empty({n_queries, n_heads, dv}, opts);  // the layout the model's output projection reads
  at::Tensor log_total = at::empty({n_heads, n_queries}, opts);
  at::Tensor entropy = at::empty({n_heads, n_queries}, opts);
  at::Tensor column_max = at::full({n_heads, n_queries, n_bins}, kNegInf, opts);

  const at::Tensor lo_ = lo.to(at::kLong).contiguous(), hi_ = hi.to(at::kLong).contiguous();
  const at::Tensor starts = bin_start.to(at::kLong).contiguous(), ends = bin_end.to(at::kLong).contiguous();
  const at::Tensor sinks_ = sunk ? sinks.to(at::kFloat).contiguous() : sinks;
  const int64_t *lo_p = lo_.data_ptr<int64_t>(), *hi_p = hi_.data_ptr<int64_t>();
  const int64_t *start_p = starts.data_ptr<int64_t>(), *end_p = ends.data_ptr<int64_t>();
  const float* sink_p = sunk ? sinks_.data_ptr<float>() : nullptr;
  const float *q_p = query.data_ptr<float>(), *k_p = key.data_ptr<float>(), *v_p = value.data_ptr<float>();
  // any head-major or row-major layout (a dimension of one row has no meaningful stride)
  const int64_t q_row = n_queries > 1 ? query.stride(1) : d, k_row = n_pos > 1 ? key.stride(1) : d, v_row = n_pos > 1 ? value.stride(1) : dv;
  TORCH_CHECK(q_row >= d && k_row >= d && v_row >= dv, "rows that do not overlap");
  float *out_p = out.data_ptr<float>(), *lz_p = log_total.data_ptr<float>(), *h_p = entropy.data_ptr<float>();
  float* cm_p = column_max.data_ptr<float>();

  for (int64_t row = 0; row < n_queries; ++row)
    TORCH_CHECK(0 <= lo_p[row] && lo_p[row] < hi_p[row] && hi_p[row] <= n_pos, "each row sees keys within [0, T)");
  TORCH_CHECK(start_p[0] == 0 && end_p[n_bins - 1] == n_pos && start_p[n_bins - 1] < n_pos, "the column bins cover every key");
  for (int64_t bin = 0; bin + 1 < n_bins; ++bin)
    TORCH_CHECK(start_p[bin] < end_p[bin] && start_p[bin] <= start_p[bin + 1] && start_p[bin + 1] <= end_p[bin] &&
                end_p[bin] <= end_p[bin + 1], "the column bins are sorted and leave no key out");
  // the first bin that ends after each key position (bins are sorted and cover [0, T))
  std::vector<int64_t> first_bin(n_pos);
  for (int64_t pos = 0, bin = 0; pos < n_pos; ++pos) {
    while (bin < n_bins - 1 && end_p[bin] <= pos) ++bin;
    first_bin[pos] = bin;
  }
  const float cap = static_cast<float>(softcap), scale = static_cast<float>(scaling);
  const int64_t n_blocks = (n_queries + block_rows - 1) / block_rows;

  at::parallel_for(0, n_heads * n_blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(block_rows * tile_keys), top(block_rows), total(block_rows), spread(block_rows), acc(block_rows * dv);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t head = task / n_blocks, row0 = (task % n_blocks) * block_rows;
      const int64_t n_rows = std::min(block_rows, n_queries - row0), kv = head / groups;
      const float* q = q_p + head * query.stride(0) + row0 * q_row;
      const float* k = k_p + kv * key.stride(0);
      const float* v = v_p + kv * value.stride(0);
      int64_t first = n_pos, last = 0;
      for (int64_t i = 0; i < n_rows; ++i) {
        first = std::min(first, lo_p[row0 + i]);
        last = std::max(last, hi_p[row0 + i]);
      }
      std::fill(top.begin(), top.end(), kNegInf);
      std::fill(total.begin(), total.end(), 0.0f);
      std::fill(spread.begin(), spread.end(), 0.0f);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t k0 = first; k0 < last; k0 += tile_keys) {
        const int64_t n_keys = std::min(tile_keys, last - k0);
        // scores [row, key] = scale * q . k   (column-major: K^T Q)
        gemm('T', 'N', n_keys, n_rows, d, scale, k + k0 * k_row, k_row, q, q_row, 0.0f, scores.data(), n_keys);
        for (int64_t i = 0; i < n_rows; ++i) {
          const int64_t row = row0 + i;
          float* s = scores.data() + i * n_keys;
          const int64_t a = std::clamp(lo_p[row] - k0, int64_t(0), n_keys), b = std::clamp(hi_p[row] - k0, int64_t(0), n_keys);
          std::fill(s, s + std::min(a, b), 0.0f);
          std::fill(s + std::max(a, b), s + n_keys, 0.0f);
          if (a >= b) continue;
          if (capped)
            for (int64_t j = a; j < b; ++j) s[j] = cap * std::tanh(s[j] / cap);
          float tile_max = kNegInf;
          float* columns = cm_p + (head * n_queries + row) * n_bins;
          for (int64_t bin = first_bin[k0 + a]; bin < n_bins && start_p[bin] < k0 + b; ++bin) {
            const int64_t from = std::max(start_p[bin] - k0, a), to = std::min(end_p[bin] - k0, b);
            const float seg = max_of(s, from, to);
            columns[bin] = std::max(columns[bin], seg);
            tile_max = std::max(tile_max, seg);
          }
          const float peak = std::max(top[i], tile_max);
          const float shrink = top[i] == kNegInf ? 0.0f : std::exp(top[i] - peak);
          const auto [row_total, row_px] = exp_in_place(s, a, b, peak);
          // spread: sum e^(s - top) (s - top); moving top to peak adds (top - peak) to every earlier term
          spread[i] = top[i] == kNegInf ? row_px : (spread[i] + (top[i] - peak) * total[i]) * shrink + row_px;
          top[i] = peak;
          total[i] = total[i] * shrink + row_total;
          if (shrink != 1.0f)
            for (int64_t c = 0; c < dv; ++c) acc[i * dv + c] *= shrink;
        }
        // acc [row, c] += p [row, key] v [key, c]   (column-major: V^T P^T)
        gemm('N', 'N', dv, n_rows, n_keys, 1.0f, v + k0 * v_row, v_row, scores.data(), n_keys, 1.0f, acc.data(), dv);
      }
      for (int64_t i = 0; i < n_rows; ++i) {
        const int64_t at_ = head * n_queries + row0 + i;
        // relative to the larger of the row's top score and its sink, so a sink far above every score stays finite
        const float peak = sunk ? std::max(top[i], sink_p[head]) : top[i];
        const float keys = std::exp(top[i] - peak);  // 1 unless the sink is higher
        const float z = total[i] * keys + (sunk ? std::exp(sink_p[head] - peak) : 0.0f);
        const float scale_keys = keys / z;  // p_j = e^(s_j - top) * scale_keys
        float* written = out_p + ((row0 + i) * n_heads + head) * dv;
        for (int64_t c = 0; c < dv; ++c) written[c] = acc[i * dv + c] * scale_keys;
        lz_p[at_] = peak + std::log(z);
        // -sum p log p, log p_j = (s_j - top) + (top - log Z), and top - log Z taken without log Z's large part
        const float below = (top[i] - peak) - std::log(z);
        h_p[at_] = total[i] == 0.0f ? 0.0f : -scale_keys * (spread[i] + below * total[i]);
      }
    }
  });
  return {out, log_total, entropy, column_max};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // the GIL is released: a layer at long T takes seconds, and the server's job threads share its process
  m.def("kept_attention", &kept_attention, "Loupe's kept-path attention of one layer (see the file's head)",
        py::call_guard<py::gil_scoped_release>());
}
