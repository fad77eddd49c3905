// The grouped expert SwiGLU of the MoE block (kernels.h `experts`), moved out of kernels.cc. Tokens are grouped by
// expert. Quantized weights take the integer path for every group (qgemm.h: the tokens routed to one expert form the
// rows of its register tiles, each weight block unpacked once per 4 of them; activations quantized once per token row
// here), except at the scalar level; float weights stream each row once per token for few tokens (decode) and
// multiply transposed activations by tiles for many (prefill), as do quantized ones at the scalar level.
// Dimension legend: T tokens, D hidden, F expert ffn, K experts per token.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "gemm.h"
#include "kernels.h"
#include "pool.h"
#include "q8.h"
#include "qdot.h"
#include "quant.h"
#include "train-vector.h"

namespace olmoe {

namespace {

// Tokens routed to one expert: rows [first, first + count) of the grouped slot order. Groups with enough tokens
// keep their activations transposed ([features][npad], tokens in lanes) for the tile kernels; small ones keep
// them row-major ([count][features]) for the streaming dot path, or quantized ([count] q8 rows) for quantized weights.
struct ExpertGroup {
  int32_t expert;
  size_t first, count;
  bool tiled = false;
  size_t npad = 0;
  size_t hidden_at = 0, ffn_at = 0;  // offsets of this group's input and gate/up/h buffers (floats)
  size_t xq_at = 0, hq_at = 0;       // offsets of its quantized input and h rows (bytes; dot path, quantized weights)
};

struct WorkItem {
  size_t group, row_begin, row_end;
};

std::vector<WorkItem> row_items(const std::vector<ExpertGroup>& groups, size_t rows) {
  std::vector<WorkItem> items;
  for (size_t g = 0; g < groups.size(); g++) {
    const size_t block = groups[g].tiled ? kRowBlock : kStreamRowBlock;
    for (size_t r = 0; r < rows; r += block) items.push_back({g, r, std::min(rows, r + block)});
  }
  return items;
}

// Whether a group keeps its input rows as floats in Buffers::xs (tiles, or float weights' dot path); quantized
// weights' dot path reads them quantized instead (xq), and takes no xs space (32 MB for a 512-token prompt).
bool keeps_rows(const ExpertArgs& a, const ExpertGroup& g) { return g.tiled || !is_quantized(a.dtype); }

std::vector<ExpertGroup> group_slots(const ExpertArgs& a, std::vector<size_t>& order) {
  const size_t slots = a.tokens * a.top_k;
  order.resize(slots);
  for (size_t s = 0; s < slots; s++) order[s] = s;
  std::stable_sort(order.begin(), order.end(), [&](size_t l, size_t r) { return a.expert_ids[l] < a.expert_ids[r]; });
  std::vector<ExpertGroup> groups;
  for (size_t i = 0; i < slots; i++) {
    const int32_t e = a.expert_ids[order[i]];
    if (groups.empty() || groups.back().expert != e) groups.push_back({e, i, 0});
    groups.back().count++;
  }
  const bool quantized = is_quantized(a.dtype);
  size_t hidden_at = 0, ffn_at = 0, xq_at = 0, hq_at = 0;
  for (auto& g : groups) {
    g.tiled = g.count >= min_tile_tokens(a.dtype);
    g.npad = g.tiled ? padded_tokens(g.count) : g.count;
    g.hidden_at = hidden_at, g.ffn_at = ffn_at, g.xq_at = xq_at, g.hq_at = hq_at;
    if (keeps_rows(a, g)) hidden_at += g.npad * a.hidden;
    ffn_at += g.npad * a.ffn;
    if (quantized && !g.tiled) xq_at += g.count * q8_row_bytes(a.dtype, a.hidden), hq_at += g.count * q8_row_bytes(a.down_dtype, a.ffn);
  }
  return groups;
}

/** fn(run, length) over the stored runs of rows [r0, r1) × tokens [0, count) of a blocked-transposed buffer. */
template <typename Fn>
void for_each_blocked_run(float* data, size_t npad, size_t features, size_t r0, size_t r1, size_t count, Fn fn) {
  for (size_t tb = 0; tb < count; tb += kTokenBlock) {
    const size_t width = block_width(npad, tb / kTokenBlock), length = std::min(kTokenBlock, count - tb);
    for (size_t r = r0; r < r1; r++) fn(data + tb * features + r * width, length);
  }
}

// The first lines of a dot-path work item's row streams (of `matrices`, and of a.up alongside a.gate).
void prefetch_item(const ExpertArgs& a, const std::vector<ExpertGroup>& groups, const WorkItem& item, const void* const* matrices, size_t in) {
  const ExpertGroup& g = groups[item.group];
  if (g.tiled) return;
  const DType dtype = matrices == a.down ? a.down_dtype : a.dtype;
  const size_t stride = row_bytes(dtype, in), rows = item.row_end - item.row_begin;
  qdot_prefetch(dtype, static_cast<const uint8_t*>(matrices[g.expert]) + item.row_begin * stride, stride, rows);
  if (matrices == a.gate) qdot_prefetch(dtype, static_cast<const uint8_t*>(a.up[g.expert]) + item.row_begin * stride, stride, rows);
}

// The end of the run of items from i on (within a pool chunk ending at `end`) that continue one dot-path group's
// rows: they run as one call, whose row streams are then as long as the chunk allows (the prefetchers ramp up once
// per stream; merged 256-row items made the expert layer of bench/native/q4-bench.cc ~5 % faster).
size_t item_run_end(const std::vector<WorkItem>& items, const std::vector<ExpertGroup>& groups, size_t i, size_t end) {
  size_t j = i + 1;
  if (groups[items[i].group].tiled) return j;
  while (j < end && items[j].group == items[i].group && items[j].row_begin == items[j - 1].row_end) j++;
  return j;
}

// Light per-group work (copying and quantizing a few rows) for decode's few slots runs on the calling thread:
// waking the pool for it cost more than the work (two of the four jobs per layer at one token).
constexpr size_t kInlineSlots = 16;
// (phase 1 quantizes whole q8 blocks of h: its items start at multiples of kStreamRowBlock)
static_assert(kStreamRowBlock % 256 == 0);

template <typename Fn>
void for_groups(const ExpertArgs& a, size_t groups, const Fn& fn) {
  if (a.tokens * a.top_k <= kInlineSlots) fn(0, groups);
  else pool().parallel_for(groups, fn);
}

struct Buffers {
  float *xs, *gate, *ys;
  uint8_t *xq, *hq;
};

// Phase 0: each group's token rows, transposed for tiled groups (rounded to q8 first for quantized weights),
// quantized for the dot path of quantized weights, else copied row-major. A token routed to several dot-path groups
// (decode's one token: all K of them) is quantized once and its q8 row copied: eight quantizations of the same 2,048
// values were ~10 µs of the calling thread per layer (AMD EPYC, q4_k).
void gather_inputs(const ExpertArgs& a, const std::vector<ExpertGroup>& groups, const std::vector<size_t>& order, const Buffers& b) {
  const size_t D = a.hidden, q8_bytes = q8_row_bytes(a.dtype, D);
  const bool quantized = is_quantized(a.dtype);
  // (thread_local: per calling JS thread; the pool's workers below reach them through these pointers)
  thread_local std::vector<uint8_t> token_rows;
  thread_local std::vector<int32_t> token_row;  // per token: its row in token_rows, or −1
  const uint8_t* quantized_rows = nullptr;
  const int32_t* row_of = nullptr;
  if (quantized) {
    token_row.assign(a.tokens, -1);
    size_t count = 0;
    for (const auto& g : groups)
      if (!g.tiled)
        for (size_t j = 0; j < g.count; j++) {
          int32_t& at = token_row[order[g.first + j] / a.top_k];
          if (at < 0) at = static_cast<int32_t>(count++);
        }
    uint8_t* rows = scratch(token_rows, count * q8_bytes);
    std::vector<size_t> tokens(count);
    for (size_t t = 0; t < a.tokens; t++)
      if (token_row[t] >= 0) tokens[token_row[t]] = t;
    const auto quantize = [&](size_t i0, size_t i1) {
      for (size_t i = i0; i < i1; i++) quantize_q8(a.dtype, a.x + tokens[i] * D, D, rows + i * q8_bytes);
    };
    if (count <= kInlineSlots) quantize(0, count);
    else pool().parallel_for(count, quantize);
    quantized_rows = rows, row_of = token_row.data();
  }
  for_groups(a, groups.size(), [&](size_t g0, size_t g1) {
    for (size_t gi = g0; gi < g1; gi++) {
      const ExpertGroup& g = groups[gi];
      auto token = [&](size_t j) { return order[g.first + j] / a.top_k; };
      if (quantized && !g.tiled) {
        for (size_t j = 0; j < g.count; j++) std::memcpy(b.xq + g.xq_at + j * q8_bytes, quantized_rows + row_of[token(j)] * q8_bytes, q8_bytes);
        continue;
      }
      thread_local std::vector<float> buffer;
      float* rows = g.tiled ? scratch(buffer, g.count * D) : &b.xs[g.hidden_at];
      for (size_t j = 0; j < g.count; j++) std::memcpy(rows + j * D, a.x + token(j) * D, D * sizeof(float));
      if (quantized) for (size_t j = 0; j < g.count; j++) round_to_q8(a.dtype, rows + j * D, D, 1);
      if (g.tiled) transpose_tokens(rows, D, g.count, D, &b.xs[g.hidden_at], g.npad);
    }
  });
}

// Between the phases, for quantized weights: the tiled groups' h = silu(gate)·up rounded to q8 in place (along the
// features of each token in the blocked-transposed layout). The dot path's h rows are quantized in phase 1, by the
// item that computed them.
void quantize_hidden(const ExpertArgs& a, const std::vector<ExpertGroup>& groups, const Buffers& b) {
  const size_t F = a.ffn;
  for_groups(a, groups.size(), [&](size_t g0, size_t g1) {
    for (size_t gi = g0; gi < g1; gi++) {
      const ExpertGroup& g = groups[gi];
      if (!g.tiled) continue;
      float* H = &b.gate[g.ffn_at];
      for (size_t first = 0; first < g.count; first += kTokenBlock) {  // token blocks: [features][width]
        const size_t block = first / kTokenBlock;
        round_to_q8_tokens(a.down_dtype, H + first * F, std::min(kTokenBlock, g.count - first), F, block_width(g.npad, block));
      }
    }
  });
}

}  // namespace

void experts(const ExpertArgs& a) {
  const size_t slots = a.tokens * a.top_k, D = a.hidden, F = a.ffn;
  const bool quantized = is_quantized(a.dtype);
  std::vector<size_t> order;
  std::vector<ExpertGroup> groups = group_slots(a, order);
  const size_t hidden_total = groups.empty() ? 0 : groups.back().hidden_at + (keeps_rows(a, groups.back()) ? groups.back().npad * D : 0);
  const size_t ffn_total = groups.empty() ? 0 : groups.back().ffn_at + groups.back().npad * F;
  const size_t xq_total = groups.empty() ? 0 : groups.back().xq_at + groups.back().count * q8_row_bytes(a.dtype, D);
  const size_t hq_total = groups.empty() ? 0 : groups.back().hq_at + groups.back().count * q8_row_bytes(a.down_dtype, F);
  thread_local std::vector<float> xs_buffer, gate_buffer, ys_buffer;  // per calling JS thread
  thread_local std::vector<uint8_t> xq_buffer, hq_buffer;
  const Buffers b{scratch(xs_buffer, hidden_total), scratch(gate_buffer, ffn_total), scratch(ys_buffer, slots * D),
                  scratch(xq_buffer, xq_total), scratch(hq_buffer, hq_total)};
  const size_t xq_stride = q8_row_bytes(a.dtype, D), hq_stride = q8_row_bytes(a.down_dtype, F);
  const bool quantized_down = is_quantized(a.down_dtype);
  gather_inputs(a, groups, order, b);
  // Phase 1: gate and up projections and SwiGLU, parallel over (expert, row block); outputs in the group's layout.
  // gate_up runs the items [i, next) of one group's consecutive rows.
  const auto first = row_items(groups, F);
  const VectorKernels& vk = vector_kernels();
  const auto gate_up = [&](size_t i, size_t next) {
    const ExpertGroup& g = groups[first[i].group];
    const size_t r0 = first[i].row_begin, r1 = first[next - 1].row_end;
    float* G = &b.gate[g.ffn_at];
    // up is read only by this item's SwiGLU: each thread's own scratch in the group's layout, not a buffer for every
    // slot of the call (a 512-token prompt's 4,096 slots: 17 MB that stayed resident after the prompt).
    thread_local std::vector<float> up_scratch;
    float* U = scratch(up_scratch, g.npad * F);
    for (const auto& [W, data] : {std::pair{a.gate[g.expert], G}, std::pair{a.up[g.expert], U}}) {
      if (g.tiled) gemm_tiles(&b.xs[g.hidden_at], g.npad, g.count, D, W, a.dtype, r0, r1, Output{data, 0, true, g.npad, F});
      else if (quantized) gemm_qdot(b.xq + g.xq_at, xq_stride, g.count, D, W, a.dtype, r0, r1, data, 1, F);
      else gemm_dot(&b.xs[g.hidden_at], g.count, D, W, a.dtype, r0, r1, data, 1, F);
    }
    // h = silu(gate)·up in place over contiguous runs (vectorized; a strided scalar loop took ~10 % of prefill)
    if (g.tiled) for_each_blocked_run(G, g.npad, F, r0, r1, g.count, [&](float* run, size_t length) { vk.swiglu(run, U + (run - G), run, length); });
    else for (size_t j = 0; j < g.count; j++) vk.swiglu(G + j * F + r0, U + j * F + r0, G + j * F + r0, r1 - r0);
    // The dot path's h rows [r0, r1) quantized for the down projection here, in parallel and while the other thread
    // still streams (a step of its own between the phases took ~6 µs of one thread per decode layer): items start
    // at multiples of kStreamRowBlock, whole q8 blocks.
    if (quantized_down && !g.tiled)
      for (size_t j = 0; j < g.count; j++) quantize_q8(a.down_dtype, G + j * F + r0, r1 - r0, b.hq + g.hq_at + j * hq_stride + q8_row_bytes(a.down_dtype, r0));
  };
  // Phase 2: down projection into row-major outputs per slot; `down` runs the items [i, next) of one group.
  const auto second = row_items(groups, D);
  const auto down = [&](size_t i, size_t next) {
    const ExpertGroup& g = groups[second[i].group];
    const size_t r0 = second[i].row_begin, r1 = second[next - 1].row_end;
    float* Y = &b.ys[g.first * D];
    if (g.tiled) gemm_tiles(&b.gate[g.ffn_at], g.npad, g.count, F, a.down[g.expert], a.down_dtype, r0, r1, Output{Y, D});
    else if (quantized_down) gemm_qdot(b.hq + g.hq_at, hq_stride, g.count, F, a.down[g.expert], a.down_dtype, r0, r1, Y, 1, D);
    else gemm_dot(&b.gate[g.ffn_at], g.count, F, a.down[g.expert], a.down_dtype, r0, r1, Y, 1, D);
  };
  // The runs of items [i0, i1) of `items` (phase 1's or 2's), each run's successor's first rows prefetched.
  const auto runs = [&](const std::vector<WorkItem>& items, size_t i0, size_t i1, const auto& body) {
    const bool down_items = &items == &second;  // phase 2's items read the down projections
    for (size_t i = i0, next; i < i1; i = next) {
      next = item_run_end(items, groups, i, i1);
      if ((down_items ? quantized_down : quantized) && next < i1) prefetch_item(a, groups, items[next], down_items ? a.down : a.gate, down_items ? F : D);
      body(i, next);
    }
  };
  if (std::none_of(groups.begin(), groups.end(), [](const ExpertGroup& g) { return g.tiled; })) {
    // Every group on the dot path (decode, small batches): both phases as one job, phase 1's items first, so the
    // threads stream on from the gate and up rows into the down rows without waiting for each other between them. A
    // down item waits only until its own group's h rows are all done (`pending` rows of h per group); phase 1's items
    // are all claimed before any of phase 2's and never wait, so whoever holds them finishes them. Chunks are two
    // groups' phase-1 rows at most: with the pool's usual first chunks (a quarter of the items, six experts' gate and
    // up rows) the other thread soon waited on them, and the layer took ~10 % longer than in two phases. Decode expert
    // layer, real Q4_K_M weights, 2 threads, AMD EPYC, alternating in one process: 497 → 486 µs (q4_k downs) and
    // 577 → 562 (q6_k) with chunks of one group; two groups a further 1.5–2 % faster, four no better.
    std::unique_ptr<std::atomic<size_t>[]> pending(new std::atomic<size_t>[groups.size()]);
    for (size_t g = 0; g < groups.size(); g++) pending[g].store(F, std::memory_order_relaxed);
    const size_t n1 = first.size();
    pool().parallel_for(n1 + second.size(), [&](size_t i0, size_t i1) {
      runs(first, std::min(i0, n1), std::min(i1, n1), [&](size_t i, size_t next) {
        gate_up(i, next);
        pending[first[i].group].fetch_sub(first[next - 1].row_end - first[i].row_begin, std::memory_order_release);
      });
      runs(second, std::max(i0, n1) - n1, std::max(i1, n1) - n1, [&](size_t i, size_t next) {
        while (pending[second[i].group].load(std::memory_order_acquire) != 0) spin_pause();
        down(i, next);
      });
    }, 2 * ((F + kStreamRowBlock - 1) / kStreamRowBlock));
  } else {
    pool().parallel_for(first.size(), [&](size_t i0, size_t i1) { runs(first, i0, i1, gate_up); });
    if (quantized_down) quantize_hidden(a, groups, b);
    pool().parallel_for(second.size(), [&](size_t i0, size_t i1) { runs(second, i0, i1, down); });
  }
  // Phase 3: weighted sum per token, visiting its experts in ascending id (the grouped order).
  const Kernels& k = kernels();
  std::vector<size_t> position(slots);
  for (size_t i = 0; i < slots; i++) position[order[i]] = i;
  pool().parallel_for(a.tokens, [&](size_t t0, size_t t1) {
    std::vector<size_t> mine(a.top_k);
    for (size_t t = t0; t < t1; t++) {
      for (size_t j = 0; j < a.top_k; j++) mine[j] = position[t * a.top_k + j];
      std::sort(mine.begin(), mine.end());
      float* out = a.out + t * D;
      std::fill(out, out + D, 0.0f);
      for (size_t i : mine) k.axpy(a.weights[order[i]], &b.ys[i * D], out, D);
    }
  });
}

}  // namespace olmoe
