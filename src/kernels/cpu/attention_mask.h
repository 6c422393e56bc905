#pragma once
// The mask geometry of attention (attention.h): which keys a query may see under causality (extended to a
// horizon inside bidirectional blocks), a sliding window and sequence ids, per row and per tile. Shared by the generic
// kernels (attention.cpp) and the AVX512-BF16 ones (attention_bf16.cpp), so that both skip and mask exactly the same
// (query, key) pairs.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "kernels/cpu/attention.h"

namespace automodel::cpu::detail {

struct AttentionMask {
  int64_t Tq, Tk;
  int64_t off;  // query row i sits at key position i + off (the queries are the last Tq positions)
  bool causal;
  int64_t window;           // 0: none
  const int64_t* ids;       // [batch, Tk] or null
  const int64_t* horizons;  // [batch, Tk] or null (causal only)

  explicit AttentionMask(const AttentionShape& s)
      : Tq(s.q_len),
        Tk(s.kv_len),
        off(s.kv_len - s.q_len),
        causal(s.causal),
        window(s.window > s.kv_len ? 0 : s.window),  // a window longer than the keys masks nothing
        ids(s.seq_ids),
        horizons(s.causal ? s.horizons : nullptr) {}

  // The last key the query at position p of batch row b may see under causality.
  int64_t horizon(int64_t b, int64_t p) const { return horizons ? horizons[b * Tk + p] : p; }
  // The first position whose query may see key j under causality (<= j; horizons are non-decreasing).
  int64_t first_seeing(int64_t b, int64_t j) const {
    if (!horizons) return j;
    const int64_t* row = horizons + b * Tk;
    return std::lower_bound(row, row + j + 1, j) - row;
  }

  // Keys [lo, hi) that some query in rows [i0, i0 + nq) of batch row b may see (causal / window bounds only).
  void key_range(int64_t b, int64_t i0, int64_t nq, int64_t& lo, int64_t& hi) const {
    lo = window > 0 ? std::max<int64_t>(0, i0 + off - window + 1) : 0;
    hi = causal ? std::min(Tk, horizon(b, i0 + nq - 1 + off) + 1) : Tk;
  }
  // Query rows [lo, hi) of batch row b that may see some key in [j0, j0 + nk).
  void query_range(int64_t b, int64_t j0, int64_t nk, int64_t& lo, int64_t& hi) const {
    lo = causal ? std::max<int64_t>(0, first_seeing(b, j0) - off) : 0;
    hi = window > 0 ? std::min(Tq, j0 + nk - 1 + window - off) : Tq;
  }
  // False when no query row of the tile shares a sequence id with any key of it (ranges disjoint).
  bool ids_overlap(int64_t b, int64_t i0, int64_t nq, int64_t j0, int64_t nk) const {
    if (!ids) return true;
    const int64_t* row = ids + b * Tk;
    auto [qmin, qmax] = std::minmax_element(row + i0 + off, row + i0 + off + nq);
    auto [kmin, kmax] = std::minmax_element(row + j0, row + j0 + nk);
    return !(*qmax < *kmin || *kmax < *qmin);
  }
  // Whether some (query, key) pair of the tile is masked by causality, the window or the ids.
  bool tile_needs_mask(int64_t i0, int64_t nq, int64_t j0, int64_t nk) const {
    if (ids || horizons) return true;
    if (causal && j0 + nk - 1 > i0 + off) return true;
    if (window > 0 && i0 + nq - 1 + off - j0 >= window) return true;
    return false;
  }
  // The keys j0 + [lo, hi) (within [0, nk)) that the query at key position qp of batch row b may see, ids aside.
  void row_keys(int64_t b, int64_t qp, int64_t j0, int64_t nk, int64_t& lo, int64_t& hi) const {
    lo = window > 0 ? std::max<int64_t>(0, qp - window + 1 - j0) : 0;
    hi = causal ? std::clamp<int64_t>(horizon(b, qp) - j0 + 1, 0, nk) : nk;
  }
  // The query rows i0 + [lo, hi) of batch row b that may see key j, ids aside (unbounded sides at the int64
  // limits).
  void key_queries(int64_t b, int64_t j, int64_t i0, int64_t& lo, int64_t& hi) const {
    lo = causal ? first_seeing(b, j) - i0 - off : std::numeric_limits<int64_t>::min();
    hi = window > 0 ? j + window - i0 - off : std::numeric_limits<int64_t>::max();
  }
};

}  // namespace automodel::cpu::detail
