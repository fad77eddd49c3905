// N-API surface of the native backend (node-addon-api). Arrays come from JS as typed arrays; every call is
// synchronous on the JS thread, which waits while the thread pool computes, so buffers cannot be collected mid-op.
#include <napi.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <sys/mman.h>

#include "kernels.h"
#include "kv-cache.h"
#include "mapping.h"
#include "packed.h"
#include "measure.h"
#include "pool.h"
#include "qgemm.h"
#include "quant.h"
#include "quantize-k.h"
#include "simd.h"
#include "step-plan.h"
#include "train-gemm.h"
#include "train-ops.h"

namespace olmoe {
void register_training(Napi::Env env, Napi::Object exports);  // train-bindings.cc
}

namespace {

using olmoe::DType;

template <typename T>
T* data_of(const Napi::Value& value) {
  auto array = value.As<Napi::TypedArray>();
  return reinterpret_cast<T*>(static_cast<char*>(array.ArrayBuffer().Data()) + array.ByteOffset());
}

size_t size_arg(const Napi::CallbackInfo& info, size_t index) { return static_cast<size_t>(info[index].As<Napi::Number>().Int64Value()); }

bool check_arguments(const Napi::CallbackInfo& info, size_t count) {
  if (info.Length() >= count) return true;
  Napi::TypeError::New(info.Env(), "olmoe native: expected " + std::to_string(count) + " arguments").ThrowAsJavaScriptException();
  return false;
}

// quantizeK(kind, values, blocks, out): kind 0 q4_k, 1 q5_k, 2 q6_k; values blocks × 256 floats; out the blocks' bytes.
Napi::Value QuantizeK(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 4)) return info.Env().Undefined();
  const int kind = info[0].As<Napi::Number>().Int32Value();
  const size_t blocks = size_arg(info, 2);
  const size_t bytes = kind == 0 ? 144 : kind == 1 ? 176 : 210;
  auto values = info[1].As<Napi::TypedArray>();
  auto out = info[3].As<Napi::TypedArray>();
  if (kind < 0 || kind > 2 || values.ByteLength() < blocks * 256 * sizeof(float) || out.ByteLength() < blocks * bytes) {
    Napi::RangeError::New(info.Env(), "olmoe native quantizeK: bad kind or buffer sizes").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  const olmoe::KQuant type = kind == 0 ? olmoe::KQuant::Q4K : kind == 1 ? olmoe::KQuant::Q5K : olmoe::KQuant::Q6K;
  olmoe::quantize_k(type, data_of<float>(values), blocks, data_of<uint8_t>(out));
  return info.Env().Undefined();
}

Napi::Value SimdLevel(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), olmoe::simd_level()); }

// streamPrefetch(): whether the decode kernels prefetch their weight streams in software (simd.h stream_prefetch).
Napi::Value StreamPrefetch(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), olmoe::stream_prefetch()); }

// quantGemmKernel(dtype): the many-token (prefill) kernel of that dtype code at this SIMD level (qgemm.h).
Napi::Value QuantGemmKernel(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 1)) return info.Env().Undefined();
  const int code = info[0].As<Napi::Number>().Int32Value();
  if (code < 0 || code > static_cast<int>(olmoe::DType::Q6_K)) {
    Napi::RangeError::New(info.Env(), "olmoe native quantGemmKernel: unknown dtype code " + std::to_string(code)).ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  return Napi::String::New(info.Env(), olmoe::qgemm_kernel(static_cast<olmoe::DType>(code)));
}

Napi::Value Threads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), olmoe::pool().threads()); }

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 1)) return info.Env().Undefined();
  std::string error;
  if (!olmoe::set_threads(info[0].As<Napi::Number>().Int32Value(), &error)) {
    Napi::Error::New(info.Env(), "cannot start " + std::to_string(info[0].As<Napi::Number>().Int32Value()) + " threads: " + error).ThrowAsJavaScriptException();
  }
  return info.Env().Undefined();
}

// mapTensor(path, offset, length) → an ArrayBuffer over the mapped bytes (or throws with the reason).
Napi::Value MapTensor(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 3)) return info.Env().Undefined();
  std::string path = info[0].As<Napi::String>();
  std::string error;
  olmoe::Mapping* handle = nullptr;
  const char* address = olmoe::map_slice(path, size_arg(info, 1), size_arg(info, 2), &handle, &error);
  if (!address) {
    Napi::Error::New(info.Env(), error).ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  return Napi::ArrayBuffer::New(
      info.Env(), const_cast<char*>(address), size_arg(info, 2), [](Napi::Env, void*, olmoe::Mapping* mapping) { olmoe::release(mapping); },
      handle);
}

// packedType(dtype) → the dtype code weights of this code are repacked to for this CPU's kernels (packed.h), or the
// code itself.
Napi::Value PackedType(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 1)) return info.Env().Undefined();
  const int code = info[0].As<Napi::Number>().Int32Value();
  const bool file_type = code >= 0 && code <= static_cast<int>(DType::Q6_K);
  return Napi::Number::New(info.Env(), file_type ? static_cast<int>(olmoe::packed_type(static_cast<DType>(code))) : code);
}

// Per JavaScript environment (the main thread, each worker): the chunk packed weights are carved from now
// (packed.h), its ArrayBuffer held by a reference until the next chunk replaces it. A chunk's buffer is then kept
// alive by the weights' views alone, and its finalizer unmaps the chunk once the last is collected.
struct PackedArena {
  Napi::Reference<Napi::ArrayBuffer> buffer;
  size_t used = 0;  // bytes of the chunk handed out
};

PackedArena& packed_arena(Napi::Env env) {
  if (PackedArena* arena = env.GetInstanceData<PackedArena>()) return *arena;
  auto* arena = new PackedArena;
  env.SetInstanceData(arena);  // deleted with the environment
  return *arena;
}

// packWeight(dtype, bytes, rows, cols) → a Uint8Array holding the rows × cols weights (q4_0, q4_k or q6_k;
// rows % 16 == 0) in their packed layout (packed.h): a view into its chunk's ArrayBuffer.
Napi::Value PackWeight(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 4)) return info.Env().Undefined();
  const int code = info[0].As<Napi::Number>().Int32Value();
  auto src = info[1].As<Napi::TypedArray>();
  const size_t rows = size_arg(info, 2), cols = size_arg(info, 3);
  const auto dtype = static_cast<DType>(code);
  const DType packed = olmoe::packed_form(dtype);
  if (packed == dtype || rows == 0 || rows % 16 != 0 || cols == 0 || cols % olmoe::block_elements(dtype) != 0 || src.ByteLength() != rows * olmoe::row_bytes(dtype, cols)) {
    Napi::RangeError::New(info.Env(), "olmoe native packWeight: dtype " + std::to_string(code) + ", " + std::to_string(rows) + " × " + std::to_string(cols) +
                                          " weights in " + std::to_string(src.ByteLength()) + " bytes: need q4_0, q4_k or q6_k, rows % 16 == 0 and whole blocks")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  const size_t bytes = rows * olmoe::row_bytes(packed, cols), rounded = (bytes + 63) / 64 * 64;
  PackedArena& arena = packed_arena(info.Env());
  if (arena.buffer.IsEmpty() || arena.buffer.Value().ByteLength() - arena.used < rounded) {
    const size_t size = std::max(rounded, olmoe::kPackedChunk);
    void* memory = olmoe::packed_chunk_allocate(size);
    if (!memory) {
      Napi::Error::New(info.Env(), "out of memory: cannot allocate " + std::to_string(size) + " bytes for packed weights").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    auto chunk = Napi::ArrayBuffer::New(info.Env(), memory, size, [size](Napi::Env, void* data) { olmoe::packed_chunk_free(data, size); });
    arena.buffer = Napi::Persistent(chunk);  // the previous chunk's reference released: its views keep it alive
    arena.used = 0;
  }
  Napi::ArrayBuffer chunk = arena.buffer.Value();
  const size_t offset = arena.used;
  arena.used += rounded;
  olmoe::pack_rows(dtype, data_of<uint8_t>(info[1]), rows, cols, static_cast<uint8_t*>(chunk.Data()) + offset);
  return Napi::Uint8Array::New(info.Env(), bytes, chunk, offset);
}

// releasePages(view) → whether the view lies in a mapped file, whose whole pages inside it this process then unmaps
// (mapping.h release_pages: the bytes stay readable).
Napi::Value ReleasePages(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 1)) return info.Env().Undefined();
  auto view = info[0].As<Napi::TypedArray>();
  return Napi::Boolean::New(info.Env(), olmoe::release_pages(data_of<uint8_t>(info[0]), view.ByteLength()));
}

// embedRows(table, rowBytes, dtype, ids, out) → whether rows `ids` of a table view into a mapped file were read from
// the file (mapping.h read_rows: the mapping's pages untouched) and widened from `dtype` into out (float32, ids ×
// width): one call for decode's embedding row where the gather, a typed array and the reference's widening in
// JavaScript took ~100 µs a token in the model (cold caches between tokens) against ~30 here. False for other memory,
// an id outside, a failed read; an out or rowBytes that does not fit the dtype throws.
Napi::Value EmbedRows(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 5)) return info.Env().Undefined();
  auto table = info[0].As<Napi::TypedArray>();
  const size_t row_bytes = size_arg(info, 1);
  const auto dtype = static_cast<DType>(info[2].As<Napi::Number>().Int32Value());
  auto ids = info[3].As<Napi::Int32Array>();
  auto out = info[4].As<Napi::Float32Array>();
  const size_t count = ids.ElementLength(), width = count > 0 ? out.ElementLength() / count : 0;
  if (count == 0 || width * count != out.ElementLength() || olmoe::row_bytes(dtype, width) != row_bytes) {
    Napi::RangeError::New(info.Env(), "olmoe native embedRows: out must hold ids × width floats, and rowBytes must be width values of the dtype").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  thread_local std::vector<uint8_t> rows;
  rows.resize(count * row_bytes);
  if (!olmoe::read_rows(data_of<uint8_t>(info[0]), table.ByteLength(), row_bytes, ids.Data(), count, rows.data())) return Napi::Boolean::New(info.Env(), false);
  for (size_t i = 0; i < count; i++) olmoe::widen_row(dtype, rows.data() + i * row_bytes, width, out.Data() + i * width);
  return Napi::Boolean::New(info.Env(), true);
}

// firstNonFinite(values) → index of the first NaN or ±∞, −1 if none.
Napi::Value FirstNonFinite(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 1)) return info.Env().Undefined();
  auto values = info[0].As<Napi::Float32Array>();
  return Napi::Number::New(info.Env(), static_cast<double>(olmoe::first_non_finite(values.Data(), values.ElementLength())));
}

// A product step's kind for the profile (step-plan.h): "matmul" and its weights' stored types, a packed type under its
// file type ("matmul q4_k", "matmul q4_k+q6_k"), so that `olmoe bench --profile` shows each type's rate apart (Q4_K_M's
// Q6_K head beside its Q4_K products). Interned: a step keeps the pointer. Only a plan being recorded keeps a step's
// kind, so outside a recording (prefill, every call of an unrecorded pass) the names are not built.
const char* product_kind(const olmoe::Product* products, size_t count) {
  if (!olmoe::recording_plan()) return "matmul";
  static const char* const names[] = {"f32", "bf16", "f16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k", "q4_0", "q4_k", "q6_k"};  // by DType
  std::string kind = "matmul";
  const char* previous[olmoe::kMostProducts] = {};
  size_t distinct = 0;
  for (size_t i = 0; i < count && i < olmoe::kMostProducts; i++) {
    const auto code = static_cast<size_t>(products[i].dtype);
    const char* name = code < sizeof(names) / sizeof(names[0]) ? names[code] : "?";
    if (std::find(previous, previous + distinct, name) != previous + distinct) continue;
    kind += (distinct == 0 ? " " : "+") + std::string(name);
    previous[distinct++] = name;
  }
  static std::mutex mutex;
  static std::unordered_map<std::string, std::unique_ptr<std::string>> interned;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = interned[kind];
  if (!slot) slot = std::make_unique<std::string>(kind);
  return slot->c_str();
}

// matmul(x, tokens, inDim, w, dtype, outDim, out)
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 7)) return info.Env().Undefined();
  const float* x = data_of<float>(info[0]);
  const size_t tokens = size_arg(info, 1), in_dim = size_arg(info, 2), out_dim = size_arg(info, 5);
  const void* w = data_of<void>(info[3]);
  const auto dtype = static_cast<DType>(info[4].As<Napi::Number>().Int32Value());
  float* out = data_of<float>(info[6]);
  const double bytes = static_cast<double>(out_dim * olmoe::row_bytes(dtype, in_dim));
  const olmoe::Product product{w, out_dim, out, dtype};
  olmoe::run_step({product_kind(&product, 1), bytes}, [=](ptrdiff_t) { olmoe::matmul(x, tokens, in_dim, w, dtype, out_dim, out); });
  return info.Env().Undefined();
}

// matmuls(x, tokens, inDim, dtype | dtypes[], weights[], outs[]): matmul of x by each weight (at most 8, of one dtype or
// each of its own) into the out of the same index, [tokens, outDim] with outDim the out's length ÷ tokens; the weights
// must hold outDim rows. Weights whose dtypes share their input (shared_input) are one job of the pool.
Napi::Value Matmuls(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 6)) return info.Env().Undefined();
  const size_t tokens = size_arg(info, 1), in_dim = size_arg(info, 2);
  auto weights = info[4].As<Napi::Array>(), outs = info[5].As<Napi::Array>();
  const size_t count = weights.Length();
  const bool listed = info[3].IsArray();
  if (count > olmoe::kMostProducts || outs.Length() != count || tokens == 0 || (listed && info[3].As<Napi::Array>().Length() != count)) {
    Napi::RangeError::New(info.Env(), "olmoe native matmuls: 1–" + std::to_string(olmoe::kMostProducts) + " weights, one out and one dtype each, and tokens").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  std::array<olmoe::Product, olmoe::kMostProducts> list;
  double bytes = 0;
  for (uint32_t i = 0; i < count; i++) {
    auto weight = weights.Get(i).As<Napi::TypedArray>();
    auto out = outs.Get(i).As<Napi::TypedArray>();
    const auto dtype = static_cast<DType>((listed ? info[3].As<Napi::Array>().Get(i) : info[3]).As<Napi::Number>().Int32Value());
    const size_t out_dim = out.ElementLength() / tokens, need = out_dim * olmoe::row_bytes(dtype, in_dim);
    if (weight.ByteLength() < need) {
      Napi::RangeError::New(info.Env(), "olmoe native matmuls: weight " + std::to_string(i) + " holds " + std::to_string(weight.ByteLength()) + " bytes, " +
                                            std::to_string(out_dim) + " rows need " + std::to_string(need))
          .ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    list[i] = {data_of<void>(weight), out_dim, data_of<float>(out), dtype};
    bytes += static_cast<double>(need);
  }
  const float* x = data_of<float>(info[0]);
  olmoe::run_step({product_kind(list.data(), count), bytes}, [=](ptrdiff_t) { olmoe::matmuls(x, tokens, in_dim, list.data(), count); });
  return info.Env().Undefined();
}

// gemm(transA, transB, m, n, k, a, b, c, accumulate, bf16?): c[m, n] (+)= op(a)[m, k] · op(b)[k, n] (training; bf16: mixed
// precision).
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 9)) return info.Env().Undefined();
  olmoe::TrainGemmArgs args{info[0].As<Napi::Boolean>(), info[1].As<Napi::Boolean>(), size_arg(info, 2), size_arg(info, 3), size_arg(info, 4),
                            data_of<float>(info[5]), data_of<float>(info[6]), data_of<float>(info[7]), info[8].As<Napi::Boolean>()};
  args.bf16 = info.Length() > 9 && info[9].ToBoolean().Value();
  const size_t lengths[] = {info[5].As<Napi::TypedArray>().ElementLength(), info[6].As<Napi::TypedArray>().ElementLength(),
                            info[7].As<Napi::TypedArray>().ElementLength()};
  if (lengths[0] < args.m * args.k || lengths[1] < args.k * args.n || lengths[2] < args.m * args.n) {
    Napi::RangeError::New(info.Env(), "gemm " + std::to_string(args.m) + "×" + std::to_string(args.k) + " · " + std::to_string(args.k) + "×" +
                                          std::to_string(args.n) + ": operands hold " + std::to_string(lengths[0]) + ", " +
                                          std::to_string(lengths[1]) + ", " + std::to_string(lengths[2]) + " floats")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  olmoe::train_gemm(args);
  return info.Env().Undefined();
}

std::vector<const void*> pointers(const Napi::Value& list) {
  auto array = list.As<Napi::Array>();
  std::vector<const void*> out(array.Length());
  for (uint32_t i = 0; i < array.Length(); i++) out[i] = data_of<void>(array.Get(i));
  return out;
}

// weightTable(arrays) → an ArrayBuffer of the arrays' data addresses, 8 bytes each: what experts() takes for a list
// of matrices, made once per list (unwrapping a layer's 192 typed arrays on every call cost ~0.7 ms of a decoded
// token). The caller keeps the arrays alive as long as the table.
Napi::Value WeightTable(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 1)) return info.Env().Undefined();
  const auto list = pointers(info[0]);
  auto table = Napi::ArrayBuffer::New(info.Env(), list.size() * sizeof(const void*));
  if (!list.empty()) std::memcpy(table.Data(), list.data(), table.ByteLength());
  return table;
}

const void* const* table_of(const Napi::Value& value) { return static_cast<const void* const*>(value.As<Napi::ArrayBuffer>().Data()); }

// experts(x, tokens, hidden, ffn, topK, dtype, gates, ups, downs, expertIds, weights, out): gates, ups and downs are
// weightTable()s.
Napi::Value Experts(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 12)) return info.Env().Undefined();
  const void* const* gates = table_of(info[6]);
  const void* const* ups = table_of(info[7]);
  const void* const* downs = table_of(info[8]);
  const auto dtype = static_cast<DType>(info[5].As<Napi::Number>().Int32Value());
  // Optional 13th argument: the down projections' dtype when it differs (Q4_K_M stores some as Q6_K).
  const auto down_dtype = info.Length() > 12 && info[12].IsNumber() ? static_cast<DType>(info[12].As<Napi::Number>().Int32Value()) : dtype;
  if (down_dtype != dtype && !(olmoe::integer_gemm(dtype) && olmoe::integer_gemm(down_dtype))) {
    Napi::RangeError::New(info.Env(), "olmoe native experts: down weights of another dtype need integer dot products for both (quantized types, SIMD level avx2 or avx512)")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  olmoe::ExpertArgs args{data_of<float>(info[0]), size_arg(info, 1), size_arg(info, 2), size_arg(info, 3), size_arg(info, 4),
                         dtype, down_dtype, gates, ups, downs,
                         data_of<int32_t>(info[9]), data_of<float>(info[10]), data_of<float>(info[11])};
  double bytes = 0;  // the distinct experts routed to when recorded (decode: top-k of them, every step)
  if (olmoe::recording_plan()) {
    std::vector<int32_t> ids(args.expert_ids, args.expert_ids + args.tokens * args.top_k);
    std::sort(ids.begin(), ids.end());
    const size_t distinct = static_cast<size_t>(std::unique(ids.begin(), ids.end()) - ids.begin());
    bytes = static_cast<double>(distinct * (2 * args.ffn * olmoe::row_bytes(dtype, args.hidden) + args.hidden * olmoe::row_bytes(down_dtype, args.ffn)));
  }
  olmoe::run_step({"experts", bytes}, [=](ptrdiff_t) { olmoe::experts(args); });
  return info.Env().Undefined();
}

// A cache type the kernels store (kv-cache.h), else a RangeError and false.
bool check_kv_type(const Napi::CallbackInfo& info, int code, const char* op) {
  if (code == static_cast<int>(DType::F32) || code == static_cast<int>(DType::F16) || code == static_cast<int>(DType::Q8_0)) return true;
  Napi::RangeError::New(info.Env(), std::string("olmoe native ") + op + ": KV cache type " + std::to_string(code) + " is not f32, f16 or q8_0").ThrowAsJavaScriptException();
  return false;
}

// That the typed array at `index` holds at least `bytes` bytes, else a RangeError naming the op and argument, and false.
bool check_bytes(const Napi::CallbackInfo& info, size_t index, size_t bytes, const char* op, const char* what) {
  const size_t have = info[index].As<Napi::TypedArray>().ByteLength();
  if (have >= bytes) return true;
  Napi::RangeError::New(info.Env(), std::string("olmoe native ") + op + ": " + what + " holds " + std::to_string(have) + " bytes, the call needs " +
                                        std::to_string(bytes)).ThrowAsJavaScriptException();
  return false;
}

// attention(q, keys, values, kvType, tokens, start, heads, kvHeads, headDim, out): keys and values are the cache's
// bytes (any typed array) in kvType.
Napi::Value Attention(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 10)) return info.Env().Undefined();
  const int kv_code = info[3].As<Napi::Number>().Int32Value();
  if (!check_kv_type(info, kv_code, "attention")) return info.Env().Undefined();
  olmoe::AttentionArgs args{data_of<float>(info[0]), data_of<void>(info[1]), data_of<void>(info[2]),
                            static_cast<DType>(kv_code), size_arg(info, 4), size_arg(info, 5),
                            size_arg(info, 6), size_arg(info, 7), size_arg(info, 8), data_of<float>(info[9])};
  if (args.kv_heads == 0 || args.heads % args.kv_heads != 0) {
    Napi::RangeError::New(info.Env(), "olmoe native attention: " + std::to_string(args.heads) + " heads do not share " + std::to_string(args.kv_heads) + " KV heads evenly").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  const size_t q_bytes = args.tokens * args.heads * args.head_dim * sizeof(float);
  const size_t cache_bytes = (args.start + args.tokens) * olmoe::kv_row_bytes(args.kv_type, args.kv_heads * args.head_dim);
  if (!check_bytes(info, 0, q_bytes, "attention", "q") || !check_bytes(info, 1, cache_bytes, "attention", "keys") ||
      !check_bytes(info, 2, cache_bytes, "attention", "values") || !check_bytes(info, 9, q_bytes, "attention", "out")) {
    return info.Env().Undefined();
  }
  if (olmoe::StepPlan* plan = olmoe::recording_plan()) {  // a later run's cache length: ≥ 0, within both buffers
    const size_t row = olmoe::kv_row_bytes(args.kv_type, args.kv_heads * args.head_dim);
    const size_t positions = std::min(info[1].As<Napi::TypedArray>().ByteLength(), info[2].As<Napi::TypedArray>().ByteLength()) / row;
    plan->bound(-static_cast<ptrdiff_t>(args.start), static_cast<ptrdiff_t>(positions) - static_cast<ptrdiff_t>(args.start + args.tokens));
  }
  const double row_pair = 2.0 * static_cast<double>(olmoe::kv_row_bytes(args.kv_type, args.kv_heads * args.head_dim));  // a key and a value row
  olmoe::run_step({"attention", row_pair * static_cast<double>(args.start + args.tokens), row_pair}, [=](ptrdiff_t shift) {
    olmoe::AttentionArgs moved = args;
    moved.start = static_cast<size_t>(static_cast<ptrdiff_t>(args.start) + shift);
    olmoe::attention(moved);
  });
  return info.Env().Undefined();
}

// kvStore(rows, count, width, kvType, out): rows of floats rounded to the cache's type into out's bytes.
Napi::Value KvStore(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 5)) return info.Env().Undefined();
  const int kv_code = info[3].As<Napi::Number>().Int32Value();
  if (!check_kv_type(info, kv_code, "kvStore")) return info.Env().Undefined();
  const size_t count = size_arg(info, 1), width = size_arg(info, 2);
  if (!check_bytes(info, 0, count * width * sizeof(float), "kvStore", "rows") ||
      !check_bytes(info, 4, count * olmoe::kv_row_bytes(static_cast<DType>(kv_code), width), "kvStore", "out")) {
    return info.Env().Undefined();
  }
  const float* rows = data_of<float>(info[0]);
  const auto type = static_cast<DType>(kv_code);
  const ptrdiff_t row = static_cast<ptrdiff_t>(olmoe::kv_row_bytes(type, width));
  uint8_t* out = data_of<uint8_t>(info[4]);
  if (olmoe::StepPlan* plan = olmoe::recording_plan()) {  // a later run's rows: whole rows within out's buffer
    auto view = info[4].As<Napi::TypedArray>();
    const ptrdiff_t before = static_cast<ptrdiff_t>(view.ByteOffset()), after = static_cast<ptrdiff_t>(view.ArrayBuffer().ByteLength()) - before - row * static_cast<ptrdiff_t>(count);
    plan->bound(-before / row, after / row);
  }
  olmoe::run_step({"kv store", static_cast<double>(row * static_cast<ptrdiff_t>(count))}, [=](ptrdiff_t shift) { olmoe::kv_store(rows, count, width, type, out + shift * row); });
  return info.Env().Undefined();
}

// Activation arrays of a few MB are allocated and freed by every op of a prefill. glibc serves such sizes with
// fresh mmaps and returns freed heap tops to the kernel, so each op paid page faults again (measured ~10 µs per
// 4 KiB page here: 2.4 s of an 8.8 s prefill). Keep them on the heap and keep freed memory for reuse.
void keep_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

// rmsnorm(x, rows, width, weight, eps, out); rope(x, tokens, heads, headDim, positions, invFreq, out); add(a, b, out)
Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 6)) return info.Env().Undefined();
  const float* x = data_of<float>(info[0]);
  const float* weight = data_of<float>(info[3]);
  const size_t rows = size_arg(info, 1), width = size_arg(info, 2);
  const float eps = info[4].As<Napi::Number>().FloatValue();
  float* out = data_of<float>(info[5]);
  olmoe::run_step({"rmsnorm"}, [=](ptrdiff_t) { olmoe::rmsnorm(x, rows, width, weight, eps, out); });
  return info.Env().Undefined();
}

Napi::Value Rope(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 7)) return info.Env().Undefined();
  olmoe::rope(data_of<float>(info[0]), size_arg(info, 1), size_arg(info, 2), size_arg(info, 3), data_of<int32_t>(info[4]), data_of<float>(info[5]),
              data_of<float>(info[6]));
  return info.Env().Undefined();
}

Napi::Value Add(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 3)) return info.Env().Undefined();
  const float* a = data_of<float>(info[0]);
  const float* b = data_of<float>(info[1]);
  float* out = data_of<float>(info[2]);
  const size_t n = info[0].As<Napi::TypedArray>().ElementLength();
  olmoe::run_step({"add"}, [=](ptrdiff_t) { olmoe::add_parallel(a, b, out, n); });
  return info.Env().Undefined();
}

// allocate(bytes) → a zeroed ArrayBuffer (the KV cache), freed by release() or when collected: fresh zero pages from
// kMappedFrom bytes on (mmap), faulted in lazily as the cache fills, calloc below. Through calloc, blocks of this size
// landed in the brk heap, whose freed middle stays resident: a cache that grew from 512 to 640 positions kept its first
// 64 MB in the process until it ended; munmap gives pages back at once. The mapped blocks are 2 MiB-aligned and, with
// OLMOE_HUGE_PAGES=1 from 4 MiB on, on transparent huge pages while the machine has free 2 MiB blocks for them
// (mapping.h huge_allocate): decode attention over 2,048 positions ran 4–10 % faster on them. Not by default: with the
// kernel's default THP defrag setting (madvise), a huge-page fault in an advised region waits for memory compaction
// when none is free, which on a long-running machine took 59 ms per fault here (a 16 KiB cache: 59 ms instead of 0.01
// ms), so creating and growing the caches of 8 concurrent generations cost more than the forward passes
// (bench/serve.mjs on OLMoE-mini: 8 streams no faster in total than one). Blocks from 1 MiB on only (OLMoE-1B-7B's f16
// rows from 256 positions on), so that caches of small models and short texts take no mapping of their own each (a
// process may hold ~65,000). V8 is told of the blocks (external memory), so that it collects the buffers of caches
// dropped without `release` before they pile up. A block's finalizer frees nothing once `release` has; finalizers and
// calls may come from several JS threads (worker_threads), hence the lock.
constexpr size_t kMappedFrom = size_t{1} << 20;
struct Allocation {
  void* data;
  size_t bytes;
  bool freed = false;
};
std::mutex allocations_lock;
std::unordered_map<void*, Allocation*> live_allocations;

// Zeroed memory of `bytes` (mapped pages of its own from kMappedFrom on), or null; block_free gives it back.
void* block_allocate(size_t bytes) { return bytes >= kMappedFrom ? olmoe::huge_allocate(bytes) : std::calloc(1, bytes); }
void block_free(void* data, size_t bytes) {
  if (bytes >= kMappedFrom) olmoe::huge_free(data, bytes);
  else std::free(data);
}

// Under allocations_lock; false if `release` freed it already.
bool free_allocation(Allocation& a) {
  if (a.freed) return false;
  block_free(a.data, a.bytes);
  a.freed = true;
  const auto at = live_allocations.find(a.data);
  if (at != live_allocations.end() && at->second == &a) live_allocations.erase(at);
  return true;
}

// The allocation behind a buffer from allocate / resize that is still live, else null.
Allocation* registered(Napi::ArrayBuffer buffer) {
  std::lock_guard<std::mutex> lock(allocations_lock);
  const auto at = live_allocations.find(buffer.Data());
  return buffer.ByteLength() > 0 && at != live_allocations.end() && at->second->bytes == buffer.ByteLength() ? at->second : nullptr;
}

// An ArrayBuffer over memory from block_allocate (or moved pages of it), registered; its finalizer frees the memory
// unless `release` or `resize` has. (The caller tells V8 of the bytes.)
Napi::ArrayBuffer adopt(Napi::Env env, void* memory, size_t bytes) {
  auto* allocation = new Allocation{memory, bytes};
  {
    std::lock_guard<std::mutex> lock(allocations_lock);
    live_allocations[memory] = allocation;
  }
  return Napi::ArrayBuffer::New(env, memory, bytes, [](Napi::Env env, void*, Allocation* a) {
    bool freed;
    {
      std::lock_guard<std::mutex> lock(allocations_lock);
      freed = free_allocation(*a);
    }
    if (freed) Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(a->bytes));
    delete a;
  }, allocation);
}

Napi::Value Allocate(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 1)) return info.Env().Undefined();
  const size_t bytes = size_arg(info, 0);
  if (bytes == 0) return Napi::ArrayBuffer::New(info.Env(), size_t{0});
  void* memory = block_allocate(bytes);
  if (memory == nullptr) {
    Napi::Error::New(info.Env(), "out of memory: cannot allocate " + std::to_string(bytes) + " bytes").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Napi::MemoryManagement::AdjustExternalMemory(info.Env(), static_cast<int64_t>(bytes));
  return adopt(info.Env(), memory, bytes);
}

// release(buffer) → whether memory from allocate was freed now: the ArrayBuffer is detached first (every view of it
// reads as empty from then on), so nothing can reach the freed pages. False for other buffers (left as they are).
Napi::Value Release(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 1) || !info[0].IsArrayBuffer()) return Napi::Boolean::New(info.Env(), false);
  auto buffer = info[0].As<Napi::ArrayBuffer>();
  void* const data = buffer.Data();
  Allocation* const allocation = registered(buffer);
  // Detached outside the lock, in case the runtime finalizes the block at once (its finalizer takes the lock).
  if (allocation == nullptr || napi_detach_arraybuffer(info.Env(), buffer) != napi_ok) return Napi::Boolean::New(info.Env(), false);
  size_t freed = 0;
  {
    std::lock_guard<std::mutex> lock(allocations_lock);
    const auto at = live_allocations.find(data);
    if (at != live_allocations.end() && at->second == allocation && free_allocation(*allocation)) freed = allocation->bytes;  // else finalized already
  }
  if (freed > 0) Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -static_cast<int64_t>(freed));
  return Napi::Boolean::New(info.Env(), true);
}

// resize(buffer, bytes) → memory from allocate grown to `bytes` (not less than it holds): its contents kept, the rest
// zero; the old buffer detached (its views read as empty). A mapped block's pages move with mremap (mapping.h
// huge_grow, to a 2 MiB-aligned block: huge pages move whole): nothing is copied and no page faults in again (a KV
// cache that doubled from 256 to 512 positions copied and re-touched its first 256 in every layer: ~0.35 ms a generated
// token of olmoe generate, the first-touch of a page costing ~6 µs on the virtual machine measured). Null for a buffer
// not from allocate.
Napi::Value Resize(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 2) || !info[0].IsArrayBuffer()) return info.Env().Null();
  auto buffer = info[0].As<Napi::ArrayBuffer>();
  const size_t bytes = size_arg(info, 1);
  void* const data = buffer.Data();
  Allocation* const old = registered(buffer);
  if (old == nullptr) return info.Env().Null();
  const size_t old_bytes = old->bytes;
  if (bytes < old_bytes) {
    Napi::RangeError::New(info.Env(), "olmoe native resize: " + std::to_string(bytes) + " bytes is less than the " + std::to_string(old_bytes) + " held").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  // The new memory first (a failure leaves the old buffer as it was); mremap moves the old pages only after the detach.
  void* memory = nullptr;
  const bool move = old_bytes >= kMappedFrom;
  if (!move) {
    memory = block_allocate(bytes);
    if (memory != nullptr) std::memcpy(memory, data, old_bytes);
  }
  const auto discard = [&] {
    if (memory != nullptr) block_free(memory, bytes);
    memory = nullptr;
  };
  const auto refuse = [&](const std::string& why) {
    Napi::Error::New(info.Env(), why + ": cannot grow " + std::to_string(old_bytes) + " bytes to " + std::to_string(bytes)).ThrowAsJavaScriptException();
    return info.Env().Undefined();
  };
  if (!move && memory == nullptr) return refuse("out of memory");
  if (napi_detach_arraybuffer(info.Env(), buffer) != napi_ok) {
    discard();
    return refuse("olmoe native resize: the buffer cannot be detached");
  }
  {
    std::lock_guard<std::mutex> lock(allocations_lock);
    const auto at = live_allocations.find(data);
    if (at == live_allocations.end() || at->second != old) {
      discard();  // finalized meanwhile: nothing left to move (cannot happen while the caller holds the buffer)
    } else if (move) {
      memory = olmoe::huge_grow(data, old_bytes, bytes);
      old->freed = memory != nullptr;  // moved: the old finalizer frees nothing
      if (memory != nullptr) live_allocations.erase(at);
    } else {
      free_allocation(*old);
    }
  }
  if (memory == nullptr) return refuse("out of memory");
  Napi::MemoryManagement::AdjustExternalMemory(info.Env(), static_cast<int64_t>(bytes) - static_cast<int64_t>(old_bytes));
  return adopt(info.Env(), memory, bytes);
}

// populate(view) → whether the whole pages inside the view (memory from allocate) were faulted in at once
// (mapping.h populate_pages); false where the kernel cannot, and the pages fault in when first written.
Napi::Value Populate(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 1)) return info.Env().Undefined();
  auto view = info[0].As<Napi::TypedArray>();
  return Napi::Boolean::New(info.Env(), olmoe::populate_pages(data_of<uint8_t>(info[0]), view.ByteLength()));
}

// measureReadBandwidth(bytes, repeats, keep = false) → bytes/s; measureFp32Peak(repeats) → FLOP/s (native/src/measure.h).
Napi::Value MeasureReadBandwidth(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 2)) return info.Env().Undefined();
  const bool keep = info.Length() > 2 && info[2].ToBoolean().Value();
  return Napi::Number::New(info.Env(), olmoe::read_bandwidth(size_arg(info, 0), info[1].As<Napi::Number>().Int32Value(), keep));
}

Napi::Value MeasureFp32Peak(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 1)) return info.Env().Undefined();
  return Napi::Number::New(info.Env(), olmoe::fp32_peak(info[0].As<Napi::Number>().Int32Value()));
}

// planBegin(): the recordable ops that follow on this thread are kept (step-plan.h) until planEnd() → the plan.
Napi::Value PlanBegin(const Napi::CallbackInfo& info) {
  if (olmoe::recording_plan()) {
    Napi::Error::New(info.Env(), "olmoe native planBegin: a plan is already recording").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  olmoe::recording_plan() = new olmoe::StepPlan();
  return info.Env().Undefined();
}

Napi::Value PlanEnd(const Napi::CallbackInfo& info) {
  olmoe::StepPlan* plan = olmoe::recording_plan();
  if (!plan) {
    Napi::Error::New(info.Env(), "olmoe native planEnd: no plan is recording").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  olmoe::recording_plan() = nullptr;
  return Napi::External<olmoe::StepPlan>::New(info.Env(), plan, [](Napi::Env, olmoe::StepPlan* p) { delete p; });
}

// planRun(plan, shift, profile?): the plan's steps again, `shift` positions after the recorded ones (within what its KV
// rows and attention caches allow, else a RangeError and nothing runs); with a profile (Float64Array, 2 per step) each
// step timed, its seconds and bytes added in.
Napi::Value PlanRun(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 2)) return info.Env().Undefined();
  const olmoe::StepPlan* plan = info[0].As<Napi::External<olmoe::StepPlan>>().Data();
  const ptrdiff_t shift = static_cast<ptrdiff_t>(info[1].As<Napi::Number>().Int64Value());
  if (shift < plan->shift_min || shift > plan->shift_max) {
    Napi::RangeError::New(info.Env(), "olmoe native planRun: shift " + std::to_string(shift) + " outside [" + std::to_string(plan->shift_min) + ", " +
                                          std::to_string(plan->shift_max) + "], the positions its cache buffers hold")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  const size_t steps = plan->steps.size();
  if (info.Length() > 2 && info[2].IsTypedArray()) {
    // A profile: seconds and bytes of each step added into [2i] and [2i + 1].
    auto view = info[2].As<Napi::TypedArray>();
    if (view.TypedArrayType() != napi_float64_array || view.ElementLength() < 2 * steps) {
      Napi::RangeError::New(info.Env(), "olmoe native planRun: the profile must be a Float64Array of 2 × " + std::to_string(steps) + " values").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    double* profile = data_of<double>(info[2]);
    for (size_t i = 0; i < steps; i++) {
      const auto started = std::chrono::steady_clock::now();
      plan->steps[i](shift);
      profile[2 * i] += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      profile[2 * i + 1] += plan->costs[i].bytes + static_cast<double>(shift) * plan->costs[i].bytes_per_shift;
    }
  } else {
    for (const olmoe::PlanStep& step : plan->steps) step(shift);
  }
  return Napi::Number::New(info.Env(), static_cast<double>(steps));
}

// planKinds(plan) → each step's kind ('matmul <types>' as product_kind names it, 'experts', 'attention', 'kv store',
// 'rmsnorm', 'add', 'rope', 'router').
Napi::Value PlanKinds(const Napi::CallbackInfo& info) {
  if (!check_arguments(info, 1)) return info.Env().Undefined();
  const olmoe::StepPlan* plan = info[0].As<Napi::External<olmoe::StepPlan>>().Data();
  auto kinds = Napi::Array::New(info.Env(), plan->costs.size());
  for (uint32_t i = 0; i < plan->costs.size(); i++) kinds.Set(i, Napi::String::New(info.Env(), plan->costs[i].kind));
  return kinds;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  keep_freed_memory();
  exports.Set("simdLevel", Napi::Function::New(env, SimdLevel));
  exports.Set("streamPrefetch", Napi::Function::New(env, StreamPrefetch));
  exports.Set("quantizeK", Napi::Function::New(env, QuantizeK));
  exports.Set("quantGemmKernel", Napi::Function::New(env, QuantGemmKernel));
  exports.Set("threads", Napi::Function::New(env, Threads));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("mapTensor", Napi::Function::New(env, MapTensor));
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("packedType", Napi::Function::New(env, PackedType));
  exports.Set("packWeight", Napi::Function::New(env, PackWeight));
  exports.Set("releasePages", Napi::Function::New(env, ReleasePages));
  exports.Set("embedRows", Napi::Function::New(env, EmbedRows));
  exports.Set("firstNonFinite", Napi::Function::New(env, FirstNonFinite));
  exports.Set("gemm", Napi::Function::New(env, Gemm));
  exports.Set("experts", Napi::Function::New(env, Experts));
  exports.Set("matmuls", Napi::Function::New(env, Matmuls));
  exports.Set("weightTable", Napi::Function::New(env, WeightTable));
  exports.Set("attention", Napi::Function::New(env, Attention));
  exports.Set("kvStore", Napi::Function::New(env, KvStore));
  exports.Set("rmsnorm", Napi::Function::New(env, RmsNorm));
  exports.Set("rope", Napi::Function::New(env, Rope));
  exports.Set("add", Napi::Function::New(env, Add));
  exports.Set("planBegin", Napi::Function::New(env, PlanBegin));
  exports.Set("planEnd", Napi::Function::New(env, PlanEnd));
  exports.Set("planRun", Napi::Function::New(env, PlanRun));
  exports.Set("planKinds", Napi::Function::New(env, PlanKinds));
  exports.Set("allocate", Napi::Function::New(env, Allocate));
  exports.Set("release", Napi::Function::New(env, Release));
  exports.Set("resize", Napi::Function::New(env, Resize));
  exports.Set("populate", Napi::Function::New(env, Populate));
  exports.Set("measureReadBandwidth", Napi::Function::New(env, MeasureReadBandwidth));
  exports.Set("measureFp32Peak", Napi::Function::New(env, MeasureFp32Peak));
  olmoe::register_training(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(olmoe_native, Init)
