{
  "targets": [
    {
      "target_name": "olmoe_native",
      "sources": ["src/addon.cc", "src/kernels.cc", "src/pool.cc", "src/mapping.cc", "src/quant.cc", "src/quantize-k.cc", "src/attention.cc", "src/kv-cache.cc", "src/elementwise.cc", "src/simd.cc", "src/q8.cc", "src/qdot.cc", "src/qdot-avx2.cc", "src/qdot-vnni.cc", "src/qgemm-vnni.cc", "src/qgemm-r16.cc", "src/qgemm-r16-avx2.cc", "src/packed.cc", "src/qgemm-amx.cc", "src/amx.cc", "src/experts.cc", "src/measure.cc", "src/train-gemm.cc", "src/train-rows.cc", "src/train-moe.cc", "src/train-attention.cc", "src/train-losses.cc", "src/train-optim.cc", "src/train-bindings.cc", "src/train-vector.cc", "src/train-vector-avx512.cc", "src/train-vector-avx2.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags_cc!": ["-fno-exceptions", "-O2", "-O3"],
      "cflags_cc": ["-std=c++17", "-O3", "-fno-math-errno", "-fPIC", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-maybe-uninitialized", "-Wno-uninitialized"],
      "ldflags": ["-pthread"],
      "xcode_settings": { "OTHER_CPLUSPLUSFLAGS": ["-std=c++17", "-O3"] }
    }
  ]
}
