// Fused CPU recurrences for rnnlab.nn.sequence (see rnnlab/nn/kernels.py, which builds and loads this file).
//
// The loop over time runs here, in C++: per step one matrix product (ATen, hence MKL) and one pass over the
// (B, H) state that does every element-wise operation of the step at once, vectorized by ATen's Vectorized
// (Sleef for exp and tanh) and split over rows by at::parallel_for. Registered as torch.ops.rnnlab.*; the
// autograd Functions stay in Python (rnnlab/nn/sequence.py), whose own loops are the reference these must match.
//
// Shapes are time-major: xp (T, B, G*H); every tensor here is contiguous float32 or float64 on the CPU.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>
#include <c10/util/ParallelGuard.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <cmath>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;

// Rows of at least this many elements per task: below it a second thread costs more than it saves.
constexpr int64_t kGrainElements = 2048;

int64_t grain_rows(int64_t width) { return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, width)); }

// The gates' sigmoid and tanh, on ATen's faster exp (exp_u20, a degree-5 polynomial, 20 ULP) rather than Sleef's
// (1 ULP) and Sleef's own tanh: sigma(x) = 1 / (1 + e^-x), tanh(x) = 2 sigma(2x) - 1. In float32, single-threaded
// here: 0.56 and 0.60 ns per element against 1.18 and 3.16 ns, with a largest absolute error over [-20, 20] of
// 8.9e-8 and 1.8e-7 (Sleef's: 8.9e-8 and 6.0e-8) -- what a step's state can tell apart. (float64: exp_u20 is
// Sleef's exp.) A NaN stays NaN (the polynomial alone would turn it into a number, hiding a diverged run).
template <typename T>
inline at::vec::Vectorized<T> sigmoid(const at::vec::Vectorized<T>& x) {
  using V = at::vec::Vectorized<T>;
  return V::blendv(V(T(1)) / (V(T(1)) + x.neg().exp_u20()), x, x.isnan());
}

template <typename T>
inline at::vec::Vectorized<T> fast_tanh(const at::vec::Vectorized<T>& x) {
  using V = at::vec::Vectorized<T>;
  return V::blendv(V(T(2)) / (V(T(1)) + (x * V(T(-2))).exp_u20()) - V(T(1)), x, x.isnan());
}

// t (T, B, N) itself where each (t, b) row is contiguous (as the transpose of a batch-major tensor is), else a
// contiguous copy: the backward passes read rows by pointer with t's first two strides.
Tensor rows_contiguous(const Tensor& t) { return t.dim() == 3 && t.stride(2) == 1 ? t : t.contiguous(); }

// One row of the Elman backward: d = (g + s) * (1 - h^2).
template <typename T>
void elman_delta_row(const T* g, const T* s, const T* h, T* d, int64_t H) {
  using V = at::vec::Vectorized<T>;
  const int64_t W = V::size();
  const V one(T(1));
  for (int64_t j = 0; j < H; j += W) {
    const int c = static_cast<int>(std::min(W, H - j));
    const V hv = V::loadu(h + j, c);
    ((V::loadu(g + j, c) + V::loadu(s + j, c)) * (one - hv * hv)).store(d + j, c);
  }
}

void check(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "rnnlab recurrences: ", name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "rnnlab recurrences: ", name, " must be float32 or float64");
}

// ----------------------------------------------------------------------------------------------------------------
// How training's loops over time use the threads. MKL's own threads split each step's (B, K) x (K, N) product by
// rows, each reading the whole of W_hh, and the element-wise pass after it is a second fork and join: two per step.
// Two ways do without them, each the whole loop over time in one parallel region:
//
// * by rows: the B rows of a batch are independent recurrences, so each thread runs the whole loop for its own rows,
//   with no synchronisation at all -- each reads all of W_hh every step, which pays where W_hh is small;
// * by units: thread k owns the hidden units [j0, j0 + w) of block k, multiplies by its own rows (the backward: its
//   columns) of W_hh, reading only that block, does the element-wise work of its units, and a barrier ends each step
//   (the GRU backward needs two: every block's dL/da_t before any block's product).
//
// Chosen from interleaved A/B runs of whole sequences (T 100, B 64, 2 threads), the time against MKL's threads:
//   Elman by rows: 0.95x / 0.89x (forward / backward) at 64 units, 0.92x / 0.92x at 128, 0.97x / 0.97x at 256,
//     0.92x / 0.96x at 512 (by units at 512: 0.91x / 0.99x; 1.05-1.13x slower at 128 and 256);
//   GRU by rows: 0.74x / 0.86x at 64, 0.91x / 0.95x at 128, 0.94x / 0.99x at 256, 0.98x / 0.96x at 512;
//   GRU by units: 0.87-0.91x forward at 128 and 256, 0.86-0.93x at 512; backward 0.92-0.97x at 512, 1.0x at 256,
//     1.04-1.06x slower at 128.
// So: the Elman RNN by rows; the GRU by rows up to 128 units, by units beyond (its backward from 512).
enum class Split { kNone, kRows, kUnits };
constexpr int64_t kMinRowsPerBlock = 16, kGruRowsMaxUnits = 128, kGruForwardMinUnits = 128,
                  kGruBackwardMinUnits = 256;

// Rows per block of a batch of B split by rows at this thread count, or 0 where it is not split so.
int64_t row_block(int64_t B) {
  const int64_t threads = at::get_num_threads();
  if (threads < 2 || at::in_parallel_region() || B < 2 * kMinRowsPerBlock) return 0;
  const int64_t blocks = std::min(threads, B / kMinRowsPerBlock);
  return (B + blocks - 1) / blocks;
}

// Units per block (a multiple of 16: whole cache lines of a row) where H units are split so, at least min_units each;
// 0 where they are not.
int64_t unit_block(int64_t H, int64_t min_units) {
  const int64_t threads = at::get_num_threads();
  if (threads < 2 || at::in_parallel_region() || H < 2 * min_units) return 0;
  const int64_t blocks = std::min(threads, H / min_units);
  return ((H + blocks - 1) / blocks + 15) / 16 * 16;
}

// The split of a training loop over time (gru: the GRU, else the Elman RNN; backward: its backward pass), with the
// rows or units per block in *block.
Split plan(bool gru, bool backward, int64_t B, int64_t H, int64_t* block) {
  *block = 0;
  if ((!gru || H <= kGruRowsMaxUnits) && (*block = row_block(B)) > 0) return Split::kRows;
  if (gru && (*block = unit_block(H, backward ? kGruBackwardMinUnits : kGruForwardMinUnits)) > 0) return Split::kUnits;
  return Split::kNone;
}

// f(b0, b1) for the rows [b0, b1) of each block of `rows` rows of [0, B), each block on one of the pool's threads,
// in one parallel region. The pool's threads do not inherit the caller's no-grad mode: f's ATen calls run below
// autograd, on operands the caller has detached.
template <typename F>
void over_row_blocks(int64_t B, int64_t rows, const F& f) {
  at::parallel_for(0, (B + rows - 1) / rows, 1, [&](int64_t k0, int64_t k1) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    for (int64_t k = k0; k < k1; ++k) f(k * rows, std::min(B, (k + 1) * rows));
  });
}

// body(k, i) for the steps i = 0..n-1 in order and, within a step, for every block k of [0, blocks), all in one
// parallel region: thread tid runs blocks tid, tid + team, ... (a fixed share, so its data stays in its cache) and a
// barrier ends every step. The team is OpenMP's whole pool, as at::parallel_for's (a num_threads clause would
// rebuild GOMP's pool, pytorch#32008); threads without a block just wait at the barriers. Below autograd, as above.
template <typename F>
void steps_over_blocks(int64_t blocks, int64_t n, const F& body) {
  std::exception_ptr error;
  std::atomic<bool> failed{false};
#pragma omp parallel
  {
    const int64_t tid = omp_get_thread_num(), team = omp_get_num_threads();
    c10::ParallelGuard parallel(true);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    for (int64_t i = 0; i < n; ++i) {
      if (!failed.load()) {
        try {
          for (int64_t k = tid; k < blocks; k += team) body(k, i);
        } catch (...) {
#pragma omp critical(rnnlab_steps_error)
          {
            if (!error) error = std::current_exception();
          }
          failed = true;
        }
      }
#pragma omp barrier
    }
  }
  if (error) std::rethrow_exception(error);
}

// ----------------------------------------------------------------------------------------------------------------
// GRU (PyTorch's): a = W_hh h_{t-1} + b_hh = [a_r, a_z, a_n]; r = sig(x_r + a_r); z = sig(x_z + a_z);
// n = tanh(x_n + r * a_n); h_t = n + z (h_{t-1} - n).

// Rows [b0, b1), hidden units [j0, j0 + w), of one forward step. x: x^p_t (B, 3H); a: W_hh h_{t-1} without its
// bias, for these units only: (B, 3w) as [a_r, a_z, a_n] (the whole of it where j0 = 0, w = H); bias: b_hh (3H);
// hp: h_{t-1} (B, H). (The bias is added here: addmm would first copy it into every row of a, at every step.)
template <typename T>
void gru_forward_rows(const T* x, const T* a, const T* bias, const T* hp, T* rz, T* an, T* n, T* h, int64_t H,
                      int64_t j0, int64_t w, int64_t b0, int64_t b1) {
  using V = at::vec::Vectorized<T>;
  const int64_t W = V::size();
  for (int64_t b = b0; b < b1; ++b) {
    const T *xb = x + b * 3 * H, *ab = a + b * 3 * w, *hb = hp + b * H;
    T *rzb = rz + b * 2 * H, *anb = an + b * H, *nb = n + b * H, *h_b = h + b * H;
    for (int64_t i = 0; i < w; i += W) {
      const int c = static_cast<int>(std::min(W, w - i));
      const int64_t j = j0 + i;
      const V r = sigmoid(V::loadu(xb + j, c) + V::loadu(ab + i, c) + V::loadu(bias + j, c));
      const V z = sigmoid(V::loadu(xb + H + j, c) + V::loadu(ab + w + i, c) + V::loadu(bias + H + j, c));
      const V va = V::loadu(ab + 2 * w + i, c) + V::loadu(bias + 2 * H + j, c);
      const V nn = fast_tanh(V::loadu(xb + 2 * H + j, c) + r * va);
      const V hv = V::loadu(hb + j, c);
      r.store(rzb + j, c);
      z.store(rzb + H + j, c);
      va.store(anb + j, c);
      nn.store(nb + j, c);
      (nn + z * (hv - nn)).store(h_b + j, c);
    }
  }
}

// xp (T, B, 3H) = W_ih x + b_ih, h0 (B, H), w_hh (3H, H), b_hh (3H)
// -> out = h_1..h_T (T, B, H), a_n (T, B, H), rz = [r, z] (T, B, 2H), n (T, B, H)
std::tuple<Tensor, Tensor, Tensor, Tensor> gru_forward(const Tensor& xp_, const Tensor& h0_, const Tensor& w_hh,
                                                       const Tensor& b_hh) {
  check(xp_, "xp");
  const Tensor xp = xp_.contiguous(), h0 = h0_.detach().contiguous(), bias = b_hh.contiguous();
  const int64_t T = xp.size(0), B = xp.size(1), H = xp.size(2) / 3;
  TORCH_CHECK(T > 0, "rnnlab gru_forward: no time steps");
  TORCH_CHECK(xp.size(2) == 3 * H && h0.sizes() == at::IntArrayRef({B, H}) &&
                  w_hh.sizes() == at::IntArrayRef({3 * H, H}) && bias.sizes() == at::IntArrayRef({3 * H}),
              "rnnlab gru_forward: shapes do not agree");
  Tensor out = at::empty({T, B, H}, xp.options());
  Tensor a_n = at::empty({T, B, H}, xp.options());
  Tensor rz = at::empty({T, B, 2 * H}, xp.options());
  Tensor n = at::empty({T, B, H}, xp.options());
  const Tensor w_d = w_hh.detach();
  int64_t block = 0;
  const Split split = plan(true, false, B, H, &block);
  const int64_t grain = grain_rows(H);
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "gru_forward", [&] {
    const scalar_t* bias_p = bias.const_data_ptr<scalar_t>();
    const auto x_at = [&](int64_t t) { return xp.const_data_ptr<scalar_t>() + t * B * 3 * H; };
    const auto h_at = [&](int64_t t) { return t < 0 ? h0.const_data_ptr<scalar_t>() : out.const_data_ptr<scalar_t>() + t * B * H; };
    if (split == Split::kRows) {  // each block of rows its own whole loop
      Tensor a = at::empty({B, 3 * H}, xp.options());
      const Tensor wt = w_d.t();
      over_row_blocks(B, block, [&](int64_t b0, int64_t b1) {
        Tensor a_r = a.narrow(0, b0, b1 - b0);
        for (int64_t t = 0; t < T; ++t) {
          at::mm_out(a_r, (t == 0 ? h0 : out[t - 1]).narrow(0, b0, b1 - b0), wt);
          gru_forward_rows<scalar_t>(x_at(t), a.const_data_ptr<scalar_t>(), bias_p, h_at(t - 1),
                                     rz.data_ptr<scalar_t>() + t * B * 2 * H, a_n.data_ptr<scalar_t>() + t * B * H,
                                     n.data_ptr<scalar_t>() + t * B * H, out.data_ptr<scalar_t>() + t * B * H, H, 0, H,
                                     b0, b1);
        }
      });
      return;
    }
    if (split == Split::kUnits) {  // block k: units [k block, ...); its rows {r, z, n} of W_hh, contiguous, its own (B, 3w) product
      const int64_t blocks = (H + block - 1) / block;
      std::vector<Tensor> hs{h0}, w_blk, a_blk;
      for (int64_t t = 0; t < T; ++t) hs.push_back(out[t]);
      for (int64_t k = 0; k < blocks; ++k) {
        const int64_t j0 = k * block, w = std::min(block, H - j0);
        w_blk.push_back(at::cat({w_d.narrow(0, j0, w), w_d.narrow(0, H + j0, w), w_d.narrow(0, 2 * H + j0, w)}).t());
        a_blk.push_back(at::empty({B, 3 * w}, xp.options()));
      }
      steps_over_blocks(blocks, T, [&](int64_t k, int64_t t) {
        const int64_t j0 = k * block, w = std::min(block, H - j0);
        at::mm_out(a_blk[k], hs[t], w_blk[k]);  // (B, 3w)
        gru_forward_rows<scalar_t>(x_at(t), a_blk[k].const_data_ptr<scalar_t>(), bias_p, h_at(t - 1),
                                   rz.data_ptr<scalar_t>() + t * B * 2 * H, a_n.data_ptr<scalar_t>() + t * B * H,
                                   n.data_ptr<scalar_t>() + t * B * H, out.data_ptr<scalar_t>() + t * B * H, H, j0, w,
                                   0, B);
      });
      return;
    }
    Tensor a = at::empty({B, 3 * H}, xp.options());
    const Tensor wt = w_d.t();
    Tensor h_prev = h0;
    for (int64_t t = 0; t < T; ++t) {
      at::mm_out(a, h_prev, wt);  // (B, 3H)
      const scalar_t *x_t = x_at(t), *a_t = a.const_data_ptr<scalar_t>(), *hp = h_at(t - 1);
      scalar_t *rz_t = rz.data_ptr<scalar_t>() + t * B * 2 * H, *an_t = a_n.data_ptr<scalar_t>() + t * B * H,
               *n_t = n.data_ptr<scalar_t>() + t * B * H, *h_t = out.data_ptr<scalar_t>() + t * B * H;
      at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
        gru_forward_rows<scalar_t>(x_t, a_t, bias_p, hp, rz_t, an_t, n_t, h_t, H, 0, H, b0, b1);
      });
      h_prev = out[t];
    }
  });
  return {out, a_n, rz, n};
}

// Rows [b0, b1), hidden units [j0, j1), of one backward step: from g = dL/dh_t (total), the gradient of the step's pre-activations,
// dxp = [dr, dz, dn] (B, 3H), of a = W_hh h_{t-1} + b_hh, dac = [dr, dz, dn * r] (B, 3H), and the part of
// dL/dh_{t-1} that does not pass through W_hh: gnext = dprev + g z (dprev: dL/dh_{t-1} from above, or none).
template <typename T>
void gru_backward_rows(const T* g, const T* rz, const T* n, const T* an, const T* hp, const T* dprev,
                       int64_t dprev_stride, T* dxp, T* dac, T* gnext, int64_t H, int64_t j0, int64_t j1, int64_t b0,
                       int64_t b1) {
  using V = at::vec::Vectorized<T>;
  const int64_t W = V::size();
  const V one(T(1));
  for (int64_t b = b0; b < b1; ++b) {
    const T *gb = g + b * H, *rzb = rz + b * 2 * H, *nb = n + b * H, *anb = an + b * H, *hb = hp + b * H;
    T *dxb = dxp + b * 3 * H, *dab = dac + b * 3 * H, *gn = gnext + b * H;
    for (int64_t j = j0; j < j1; j += W) {
      const int c = static_cast<int>(std::min(W, j1 - j));
      const V gg = V::loadu(gb + j, c), r = V::loadu(rzb + j, c), z = V::loadu(rzb + H + j, c);
      const V nn = V::loadu(nb + j, c), va = V::loadu(anb + j, c), hv = V::loadu(hb + j, c);
      const V dn = gg * (one - z) * (one - nn * nn);
      const V dz = gg * (hv - nn) * z * (one - z);
      const V dr = dn * va * r * (one - r);
      dr.store(dxb + j, c);
      dz.store(dxb + H + j, c);
      dn.store(dxb + 2 * H + j, c);
      dr.store(dab + j, c);
      dz.store(dab + H + j, c);
      (dn * r).store(dab + 2 * H + j, c);
      V gz = gg * z;
      if (dprev != nullptr) gz = gz + V::loadu(dprev + b * dprev_stride + j, c);
      gz.store(gn + j, c);
    }
  }
}

// Saved forward values and dout = dL/dh_1..h_T (T, B, H; rows contiguous, any strides) -> dxp (T, B, 3H), dh0 (B, H), dw_hh (3H, H), db_hh (3H)
std::tuple<Tensor, Tensor, Tensor, Tensor> gru_backward(const Tensor& dout_, const Tensor& out_, const Tensor& h0_,
                                                        const Tensor& w_hh, const Tensor& a_n_, const Tensor& rz_,
                                                        const Tensor& n_) {
  check(out_, "out");
  const Tensor dout = rows_contiguous(dout_), h0 = h0_.contiguous(), out = out_.contiguous();
  const Tensor a_n = a_n_.contiguous(), rz = rz_.contiguous(), n = n_.contiguous();
  const int64_t T = out.size(0), B = out.size(1), H = out.size(2);
  TORCH_CHECK(T > 0 && dout.sizes() == out.sizes() && a_n.sizes() == out.sizes() && n.sizes() == out.sizes() &&
                  rz.sizes() == at::IntArrayRef({T, B, 2 * H}) && h0.sizes() == at::IntArrayRef({B, H}) &&
                  w_hh.sizes() == at::IntArrayRef({3 * H, H}),
              "rnnlab gru_backward: shapes do not agree");
  Tensor dxp = at::empty({T, B, 3 * H}, out.options());
  Tensor dac = at::empty({T, B, 3 * H}, out.options());
  Tensor g = dout[T - 1].detach().clone(), g_next = at::empty({B, H}, out.options());
  const Tensor w_d = w_hh.detach();
  int64_t block = 0;
  const Split split = plan(true, true, B, H, &block);
  const int64_t grain = grain_rows(H);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "gru_backward", [&] {
    // step t's pass: g (dL/dh_t) -> dxp_t, dac_t and gnext = dprev + g z, all (B, .) at t
    const auto pass = [&](int64_t t, const Tensor& g_t, Tensor& gn_t, int64_t j0, int64_t j1, int64_t b0, int64_t b1) {
      const scalar_t* hp = t > 0 ? out.const_data_ptr<scalar_t>() + (t - 1) * B * H : h0.const_data_ptr<scalar_t>();
      const scalar_t* dprev = t > 0 ? dout.const_data_ptr<scalar_t>() + (t - 1) * dout.stride(0) : nullptr;
      gru_backward_rows<scalar_t>(g_t.const_data_ptr<scalar_t>(), rz.const_data_ptr<scalar_t>() + t * B * 2 * H,
                                  n.const_data_ptr<scalar_t>() + t * B * H, a_n.const_data_ptr<scalar_t>() + t * B * H,
                                  hp, dprev, dout.stride(1), dxp.data_ptr<scalar_t>() + t * B * 3 * H,
                                  dac.data_ptr<scalar_t>() + t * B * 3 * H, gn_t.data_ptr<scalar_t>(), H, j0, j1, b0, b1);
    };
    if (split == Split::kRows) {  // each block of rows its own whole loop; step t reads buf[(T - 1 - t) % 2]
      Tensor buf[2] = {g, g_next};
      over_row_blocks(B, block, [&](int64_t b0, int64_t b1) {
        for (int64_t t = T - 1; t >= 0; --t) {
          const int64_t i = T - 1 - t;
          pass(t, buf[i % 2], buf[(i + 1) % 2], 0, H, b0, b1);
          buf[(i + 1) % 2].narrow(0, b0, b1 - b0).addmm_(dac[t].narrow(0, b0, b1 - b0), w_d);
        }
      });
      g = buf[T % 2];
    } else if (split == Split::kUnits) {  // per step: each block's units through the pass, a barrier, then its columns of + dac_t W_hh
      const int64_t blocks = (H + block - 1) / block;
      Tensor buf[2] = {g, g_next};  // step t reads buf[(T - 1 - t) % 2] and writes the other
      std::vector<Tensor> dacs;
      for (int64_t t = 0; t < T; ++t) dacs.push_back(dac[t]);
      steps_over_blocks(blocks, 2 * T, [&](int64_t k, int64_t i) {
        const int64_t t = T - 1 - i / 2, j0 = k * block, w = std::min(block, H - j0);
        Tensor& gn = buf[(i / 2 + 1) % 2];
        if (i % 2 == 0) {
          pass(t, buf[(i / 2) % 2], gn, j0, j0 + w, 0, B);
        } else {
          gn.narrow(1, j0, w).addmm_(dacs[t], w_d.narrow(1, j0, w));
        }
      });
      g = buf[T % 2];
    } else {
      for (int64_t t = T - 1; t >= 0; --t) {
        at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) { pass(t, g, g_next, 0, H, b0, b1); });
        g_next.addmm_(dac[t], w_d);  // + (dL/da_t) W_hh
        std::swap(g, g_next);
      }
    }
  });
  // dW_hh = sum_t (dL/da_t)^T h_{t-1}: one product over steps 2..T, one for step 1 (whose h_{t-1} is h_0)
  Tensor dw = at::mm(dac[0].t(), h0);
  if (T > 1) dw.addmm_(dac.slice(0, 1).reshape({(T - 1) * B, 3 * H}).t(), out.slice(0, 0, T - 1).reshape({(T - 1) * B, H}));
  Tensor db = dac.sum(at::IntArrayRef({0, 1}));
  return {dxp, g, dw, db};
}

// ----------------------------------------------------------------------------------------------------------------
// Elman: h_t = tanh(x^p_t + W_hh h_{t-1}), both biases in x^p_t.

// xp (T, B, H), h0 (B, H), w_hh (H, H) -> out = h_1..h_T (T, B, H). Each step's product goes to a small buffer
// and the pass that applies tanh reads x^p_t beside it: no copy of the whole of xp.
Tensor elman_forward(const Tensor& xp_, const Tensor& h0_, const Tensor& w_hh) {
  check(xp_, "xp");
  const Tensor xp = xp_.contiguous(), h0 = h0_.detach().contiguous();
  const int64_t T = xp.size(0), B = xp.size(1), H = xp.size(2);
  TORCH_CHECK(T > 0, "rnnlab elman_forward: no time steps");
  TORCH_CHECK(h0.sizes() == at::IntArrayRef({B, H}) && w_hh.sizes() == at::IntArrayRef({H, H}),
              "rnnlab elman_forward: shapes do not agree");
  Tensor out = at::empty({T, B, H}, xp.options());
  Tensor a = at::empty({B, H}, xp.options());  // W_hh h_{t-1}
  const Tensor wt = w_hh.detach().t();
  const int64_t grain = grain_rows(H);
  int64_t block = 0;
  const Split split = plan(false, false, B, H, &block);
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "elman_forward", [&] {
    using V = at::vec::Vectorized<scalar_t>;
    const auto tanh_sum = [](V xv, V av) { return fast_tanh(xv + av); };
    const scalar_t* a_p = a.const_data_ptr<scalar_t>();
    if (split == Split::kRows) {  // each block of rows its own whole loop
      over_row_blocks(B, block, [&](int64_t b0, int64_t b1) {
        Tensor a_r = a.narrow(0, b0, b1 - b0);
        for (int64_t t = 0; t < T; ++t) {
          at::mm_out(a_r, (t == 0 ? h0 : out[t - 1]).narrow(0, b0, b1 - b0), wt);
          const scalar_t* x = xp.const_data_ptr<scalar_t>() + t * B * H;
          scalar_t* h = out.data_ptr<scalar_t>() + t * B * H;
          at::vec::map2(tanh_sum, h + b0 * H, x + b0 * H, a_p + b0 * H, (b1 - b0) * H);
        }
      });
      return;
    }
    Tensor h_prev = h0;
    for (int64_t t = 0; t < T; ++t) {
      const scalar_t* x = xp.const_data_ptr<scalar_t>() + t * B * H;
      scalar_t* h = out.data_ptr<scalar_t>() + t * B * H;
      at::mm_out(a, h_prev, wt);
      at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
        at::vec::map2(tanh_sum, h + b0 * H, x + b0 * H, a_p + b0 * H, (b1 - b0) * H);
      });
      h_prev = out[t];
    }
  });
  return out;
}

// dout = dL/dh_1..h_T (T, B, H), any layout whose rows are contiguous (the transpose of a batch-major gradient
// is read in place), and the forward's out -> dxp (T, B, H), dh0 (B, H), dw_hh (H, H), with
// delta_t = (dout_t + delta_{t+1} W_hh) * (1 - h_t^2).
std::tuple<Tensor, Tensor, Tensor> elman_backward(const Tensor& dout_, const Tensor& out_, const Tensor& h0_,
                                                  const Tensor& w_hh) {
  check(out_, "out");
  const Tensor h0 = h0_.contiguous(), out = out_.contiguous(), dout = rows_contiguous(dout_);
  const int64_t T = out.size(0), B = out.size(1), H = out.size(2);
  TORCH_CHECK(T > 0 && dout.sizes() == out.sizes() && h0.sizes() == at::IntArrayRef({B, H}) &&
                  w_hh.sizes() == at::IntArrayRef({H, H}),
              "rnnlab elman_backward: shapes do not agree");
  Tensor delta = at::empty({T, B, H}, out.options());
  Tensor s = at::zeros({B, H}, out.options());  // delta_{t+1} W_hh (none after the last step)
  const Tensor w_d = w_hh.detach();
  const int64_t grain = grain_rows(H), st = dout.stride(0), sb = dout.stride(1);
  int64_t block = 0;
  const Split split = plan(false, true, B, H, &block);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "elman_backward", [&] {
    const scalar_t* s_p = s.const_data_ptr<scalar_t>();
    // step t's delta_t, rows [b0, b1)
    const auto pass = [&](int64_t t, int64_t b0, int64_t b1) {
      scalar_t* d = delta.data_ptr<scalar_t>() + t * B * H;
      const scalar_t* h = out.const_data_ptr<scalar_t>() + t * B * H;
      const scalar_t* g = dout.const_data_ptr<scalar_t>() + t * st;
      for (int64_t b = b0; b < b1; ++b) elman_delta_row<scalar_t>(g + b * sb, s_p + b * H, h + b * H, d + b * H, H);
    };
    if (split == Split::kRows) {  // each block of rows its own whole loop
      over_row_blocks(B, block, [&](int64_t b0, int64_t b1) {
        Tensor s_r = s.narrow(0, b0, b1 - b0);
        for (int64_t t = T - 1; t >= 0; --t) {
          if (t < T - 1) at::mm_out(s_r, delta[t + 1].narrow(0, b0, b1 - b0), w_d);
          pass(t, b0, b1);
        }
      });
      return;
    }
    for (int64_t t = T - 1; t >= 0; --t) {
      if (t < T - 1) at::mm_out(s, delta[t + 1], w_d);
      at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) { pass(t, b0, b1); });
    }
  });
  Tensor dh0 = at::mm(delta[0], w_hh);
  Tensor dw = at::mm(delta[0].t(), h0);  // dW = sum_t delta_t^T h_{t-1}
  if (T > 1) dw.addmm_(delta.slice(0, 1).reshape({(T - 1) * B, H}).t(), out.slice(0, 0, T - 1).reshape({(T - 1) * B, H}));
  return {delta, dh0, dw};
}


// out (B, N) += a (B, K) @ wt (K, N). For fewer than kSplitBelowRows rows one product leaves the other threads
// idle (a matrix-vector product is bound by reading W), so the columns are split over the threads instead, each
// thread one product on its own block of W.
constexpr int64_t kSplitBelowRows = 16;

void addmm_split_(Tensor& out, const Tensor& a, const Tensor& wt) {
  const int64_t N = out.size(1), threads = at::get_num_threads();
  if (out.size(0) >= kSplitBelowRows || threads < 2 || N < 128) {
    out.addmm_(a, wt);
    return;
  }
  const int64_t block = ((N + threads - 1) / threads + 15) / 16 * 16;
  // The pool's threads do not inherit the caller's no-grad mode: on weights that require grad their in-place
  // products would record autograd history, racing on the shared buffer's metadata (a crash with 16 threads).
  // Detached operands and a dispatch below autograd keep them plain products.
  const Tensor o_all = out.detach(), a_d = a.detach(), wt_d = wt.detach();
  at::parallel_for(0, N, block, [&](int64_t n0, int64_t n1) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    Tensor o = o_all.narrow(1, n0, n1 - n0);
    o.addmm_(a_d, wt_d.narrow(1, n0, n1 - n0));
  });
}
// oneDNN's product with a matrix packed by torch.ops.mkldnn._reorder_linear_weight (W (N, K) in its blocked
// layout): a (B, K) -> a @ W^T + bias, or a @ W^T + other (its sum post-op). Called through the dispatcher, boxed,
// as Python calls it: the ops belong to PyTorch's CPU library where it is built with oneDNN, and the Python side
// passes packed matrices only then. Each returns a new (B, N) tensor.
Tensor dnn_linear(const Tensor& a, const Tensor& packed, const Tensor& bias) {
  static const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  torch::jit::Stack stack{a, packed, bias.defined() ? c10::IValue(bias) : c10::IValue(), c10::IValue(std::string("none")),
                          c10::IValue(c10::List<std::optional<at::Scalar>>()), c10::IValue()};
  op.callBoxed(&stack);
  return stack.back().toTensor();
}

Tensor dnn_add(const Tensor& a, const Tensor& packed, const Tensor& other) {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "binary");
  torch::jit::Stack stack{a, other, packed, c10::IValue(), c10::IValue(std::string("add"))};
  op.callBoxed(&stack);
  return stack.back().toTensor();
}

// ----------------------------------------------------------------------------------------------------------------
// A self-fed run's inputs, decided step by step without gradient (rnnlab.feeding.own_inputs): the inference step
// of a whole language model -- input table, L layers of one cell, softmax layer -- and the choice of the next
// token, T - 1 times, with no Python between steps.

enum Cell : int64_t { kElman = 0, kGRU = 1, kLSTM = 2 };

// LSTM rows [b0, b1) of one step (the training loop's and the decision loop's): z (B, 4H) becomes the activated gates in place; c_t, tanh(c_t), h_t.
template <typename T>
void lstm_forward_rows(T* z, const T* c_prev, T* c, T* tc, T* h, int64_t H, int64_t b0, int64_t b1) {
  using V = at::vec::Vectorized<T>;
  const int64_t W = V::size();
  for (int64_t b = b0; b < b1; ++b) {
    T* zb = z + b * 4 * H;
    for (int64_t j = 0; j < H; j += W) {
      const int n = static_cast<int>(std::min(W, H - j));
      const V i = sigmoid(V::loadu(zb + j, n)), f = sigmoid(V::loadu(zb + H + j, n));
      const V g = fast_tanh(V::loadu(zb + 2 * H + j, n)), o = sigmoid(V::loadu(zb + 3 * H + j, n));
      const V cn = f * V::loadu(c_prev + b * H + j, n) + i * g;
      const V t = fast_tanh(cn);
      i.store(zb + j, n);
      f.store(zb + H + j, n);
      g.store(zb + 2 * H + j, n);
      o.store(zb + 3 * H + j, n);
      cn.store(c + b * H + j, n);
      t.store(tc + b * H + j, n);
      (o * t).store(h + b * H + j, n);
    }
  }
}

// The next token of each row from its logits (B, V): the argmax (mode 0; ties: the lowest id), or the first k
// whose cumulative probability softmax(z / temperature) (float64) exceeds u_b times the total (mode 1: an
// inverse-CDF draw). With settings (B, 4) float64, each row its own [mode, temperature, top_k, top_p] instead: a
// draw then keeps, as rnnlab.decoding.distribution does, only the top_k largest logits (0 or >= V: all; ties by
// index) and of those the smallest set of most probable tokens whose mass reaches top_p (< 1; the first always).
template <typename T>
void choose_rows(const T* logits, int64_t V, int64_t mode, double temperature, const double* settings,
                 const double* u, int64_t* out, int64_t b0, int64_t b1) {
  std::vector<double> p(V);
  std::vector<int64_t> order;
  for (int64_t b = b0; b < b1; ++b) {
    const T* z = logits + b * V;
    int64_t row_mode = mode, top_k = 0;
    double temp = temperature, top_p = 1.0;
    if (settings != nullptr) {
      const double* st = settings + b * 4;
      row_mode = static_cast<int64_t>(st[0]);
      temp = st[1];
      top_k = static_cast<int64_t>(st[2]);
      top_p = st[3];
    }
    int64_t best = 0;  // the first maximum; a NaN counts as the maximum, as NumPy's and torch's argmax have it
    for (int64_t k = 1; k < V && !std::isnan(z[best]); ++k) best = (z[k] > z[best] || std::isnan(z[k])) ? k : best;
    if (row_mode == 0) {
      out[b] = best;
      continue;
    }
    const double top = static_cast<double>(z[best]);
    double total = 0;
    for (int64_t k = 0; k < V; ++k) total += (p[k] = std::exp((static_cast<double>(z[k]) - top) / temp));
    const bool by_k = 0 < top_k && top_k < V, by_p = top_p < 1.0;
    if ((by_k || by_p) && !std::isnan(total)) {
      order.resize(V);
      for (int64_t k = 0; k < V; ++k) order[k] = k;
      // most probable first by the raw logits, ties by index (NumPy's stable argsort of -z)
      std::stable_sort(order.begin(), order.end(), [z](int64_t a, int64_t c) { return z[a] > z[c]; });
      if (by_k) {
        for (int64_t r = top_k; r < V; ++r) p[order[r]] = 0;
      }
      if (by_p) {
        double mass = 0;
        for (int64_t r = 0; r < V; ++r) mass += p[order[r]];
        const double reach = top_p * mass;
        double before = 0;  // the mass of the more probable tokens
        for (int64_t r = 0; r < V; ++r) {
          const double q = p[order[r]];
          if (r > 0 && !(before < reach)) p[order[r]] = 0;
          before += q;
        }
      }
      total = 0;
      for (int64_t k = 0; k < V; ++k) total += p[k];
    }
    const double target = u[b] * total;
    double cum = 0;
    int64_t pick = std::isnan(target) ? 0 : V - 1;  // NaN logits: token 0, as the Python loops' draw gives
    for (int64_t k = 0; k < V; ++k) {
      cum += p[k];
      if (cum > target) {
        pick = k;
        break;
      }
    }
    out[b] = pick;
  }
}

// x (B, T) ids: x[:, 0] starts every row; truth (B, T - 1) bool, optional: where set, step t takes x[:, t]
// instead of the model's own token. state: per layer h (B, H), and c for the LSTM. table (V, G*H): the first
// layer's input projection of every symbol with the biases that add to it; w_ih/b_in: the input projections of
// the later layers (entry 0 unused); w_hh (G*H, H) per layer; b_rec: the GRU's b_hh per layer (else empty);
// dec_w (V, H), dec_b (V). u (T - 1, B) float64: the uniforms of mode 1, at the temperature given. dnn_ih, dnn_hh:
// empty, or per layer oneDNN's packed W_ih / W_hh (float32) where that product should run on oneDNN (None where
// not; dnn_ih[0] unused), else the product runs on the BLAS. settings (B, 4) float64, optional: each row's own
// [mode, temperature, top_k, top_p] (choose_rows), for a batch of streams that draw differently; mode and
// temperature are then unused, and u is needed where any row samples. keep_logits: also return every step's logits.
// -> the inputs fed (B, T), the state after reading fed[:, :T-1] (as state: the next run goes on from there), and
// the logits (T - 1, B, V) each choice was made from (keep_logits; else an empty tensor).
std::tuple<Tensor, std::vector<Tensor>, Tensor> decide(const Tensor& x, at::TensorList state, int64_t cell, const Tensor& table, at::TensorList w_ih,
              at::TensorList b_in, at::TensorList w_hh, at::TensorList b_rec, const Tensor& dec_w,
              const Tensor& dec_b, int64_t mode, double temperature, const std::optional<Tensor>& u_,
              const std::optional<Tensor>& truth_, const c10::List<std::optional<Tensor>>& dnn_ih,
              const c10::List<std::optional<Tensor>>& dnn_hh, const std::optional<Tensor>& settings_,
              bool keep_logits) {
  check(table, "table");
  TORCH_CHECK(cell == kElman || cell == kGRU || cell == kLSTM, "rnnlab decide: unknown cell ", cell);
  TORCH_CHECK(mode == 0 || mode == 1, "rnnlab decide: mode 0 (argmax) or 1 (sample)");
  TORCH_CHECK(w_hh.size() > 0, "rnnlab decide: no layers");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kLong, "rnnlab decide: x must be (B, T) int64");
  const int64_t L = w_hh.size(), B = x.size(0), T = x.size(1), H = w_hh[0].size(1), V = dec_w.size(0);
  const int64_t S = cell == kLSTM ? 2 : 1;
  TORCH_CHECK(static_cast<int64_t>(state.size()) == S * L, "rnnlab decide: ", S * L, " state tensors expected");
  for (const Tensor& st : state) {
    TORCH_CHECK(st.sizes() == at::IntArrayRef({B, H}) && st.scalar_type() == table.scalar_type(),
                "rnnlab decide: every state tensor must be (B, H) of the weights' dtype");
  }
  TORCH_CHECK(temperature > 0, "rnnlab decide: the temperature must be positive");
  const int64_t steps = std::max<int64_t>(T - 1, 0);
  Tensor settings;
  bool sampling = mode == 1;
  if (settings_.has_value()) {
    settings = settings_->contiguous();
    TORCH_CHECK(settings.scalar_type() == at::kDouble && settings.sizes() == at::IntArrayRef({B, 4}),
                "rnnlab decide: settings must be (B, 4) float64");
    const double* st = settings.const_data_ptr<double>();
    sampling = false;
    for (int64_t b = 0; b < B; ++b) {
      TORCH_CHECK((st[4 * b] == 0 || st[4 * b] == 1) && st[4 * b + 1] > 0 && st[4 * b + 2] >= 0 &&
                      st[4 * b + 3] > 0 && st[4 * b + 3] <= 1,
                  "rnnlab decide: each row's settings are [mode 0 or 1, temperature > 0, top_k >= 0, 0 < top_p <= 1]");
      sampling |= st[4 * b] == 1;
    }
  }
  TORCH_CHECK(!sampling || u_.has_value(), "rnnlab decide: sampling needs u");
  TORCH_CHECK(!sampling || (u_->scalar_type() == at::kDouble && u_->sizes() == at::IntArrayRef({steps, B})),
              "rnnlab decide: u must be (T - 1, B) float64");
  TORCH_CHECK(!truth_.has_value() ||
                  (truth_->scalar_type() == at::kBool && truth_->sizes() == at::IntArrayRef({B, steps})),
              "rnnlab decide: truth must be (B, T - 1) bool");
  TORCH_CHECK(dec_b.sizes() == at::IntArrayRef({V}), "rnnlab decide: dec_b must be (V)");
  TORCH_CHECK((dnn_ih.size() == 0 || static_cast<int64_t>(dnn_ih.size()) == L) &&
                  (dnn_hh.size() == 0 || static_cast<int64_t>(dnn_hh.size()) == L),
              "rnnlab decide: dnn_ih and dnn_hh must be empty or hold one entry per layer");
  std::vector<Tensor> p_ih(L), p_hh(L);  // undefined: the BLAS
  for (int64_t k = 0; k < L; ++k) {
    if (dnn_ih.size() > 0 && k > 0 && dnn_ih.get(k).has_value()) p_ih[k] = *dnn_ih.get(k);
    if (dnn_hh.size() > 0 && dnn_hh.get(k).has_value()) p_hh[k] = *dnn_hh.get(k);
  }
  const bool any_dnn = std::any_of(p_ih.begin(), p_ih.end(), [](const Tensor& t) { return t.defined(); }) ||
                       std::any_of(p_hh.begin(), p_hh.end(), [](const Tensor& t) { return t.defined(); });
  TORCH_CHECK(!any_dnn || table.scalar_type() == at::kFloat, "rnnlab decide: oneDNN's packed matrices are float32");
  const auto opt = table.options();
  Tensor fed = at::empty({B, T}, x.options().dtype(at::kLong));
  if (T > 0) fed.select(1, 0).copy_(x.select(1, 0));
  const Tensor u = sampling ? u_->contiguous() : Tensor();
  const Tensor truth = truth_.has_value() ? truth_->contiguous() : Tensor();
  const Tensor xs = x.contiguous();
  std::vector<Tensor> h, c, h_next, c_next, w_ih_t, w_hh_t, b_gru;
  for (int64_t k = 0; k < L; ++k) {
    if (cell == kGRU) {  // read by pointer in the gate pass: contiguous, (3H)
      b_gru.push_back(b_rec[k].contiguous());
      TORCH_CHECK(b_gru[k].sizes() == at::IntArrayRef({3 * H}) && b_gru[k].scalar_type() == table.scalar_type(),
                  "rnnlab decide: the GRU's b_hh must be (3H) of the weights' dtype");
    }
    h.push_back(state[S * k].contiguous().clone());
    h_next.push_back(at::empty({B, H}, opt));
    if (cell == kLSTM) {
      c.push_back(state[S * k + 1].contiguous().clone());
      c_next.push_back(at::empty({B, H}, opt));
    }
    w_hh_t.push_back(w_hh[k].t());
    w_ih_t.push_back(k > 0 ? w_ih[k].t() : Tensor());
  }
  const int64_t G = table.size(1);
  Tensor a = at::empty({B, G}, opt), xp = at::empty({B, G}, opt), logits = at::empty({B, V}, opt);
  Tensor rz = at::empty({B, 2 * H}, opt), an = at::empty({B, H}, opt), nb = at::empty({B, H}, opt);
  Tensor tcb = at::empty({B, H}, opt);  // the LSTM's tanh(c_t), unused here
  Tensor tok = at::empty({B}, x.options().dtype(at::kLong));
  Tensor kept = keep_logits ? at::empty({steps, B, V}, opt) : at::empty({0}, opt);
  const Tensor dec_t = dec_w.t();
  const int64_t grain = grain_rows(H), choose_grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, V));
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "decide", [&] {
    int64_t* fed_p = fed.data_ptr<int64_t>();
    for (int64_t t = 1; t < T; ++t) {
      for (int64_t b = 0; b < B; ++b) tok.data_ptr<int64_t>()[b] = fed_p[b * T + t - 1];
      for (int64_t k = 0; k < L; ++k) {
        if (k == 0) {
          at::index_select_out(xp, table, 0, tok);  // (B, G)
        } else if (p_ih[k].defined()) {
          xp = dnn_linear(h_next[k - 1], p_ih[k], b_in[k]);
        } else {
          xp.copy_(b_in[k].expand({B, G}));
          addmm_split_(xp, h_next[k - 1], w_ih_t[k]);  // the layer below's new h
        }
        if (cell == kGRU) {
          if (p_hh[k].defined()) {
            a = dnn_linear(h[k], p_hh[k], Tensor());
          } else {
            a.zero_();
            addmm_split_(a, h[k], w_hh_t[k]);
          }
          const scalar_t *x_p = xp.const_data_ptr<scalar_t>(), *a_p = a.const_data_ptr<scalar_t>(),
                         *bias = b_gru[k].const_data_ptr<scalar_t>(), *hp = h[k].const_data_ptr<scalar_t>();
          scalar_t *rz_p = rz.data_ptr<scalar_t>(), *an_p = an.data_ptr<scalar_t>(), *n_p = nb.data_ptr<scalar_t>(),
                   *h_p = h_next[k].data_ptr<scalar_t>();
          at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
            gru_forward_rows<scalar_t>(x_p, a_p, bias, hp, rz_p, an_p, n_p, h_p, H, 0, H, b0, b1);
          });
        } else {
          if (p_hh[k].defined()) {
            xp = dnn_add(h[k], p_hh[k], xp);  // (B, G): all pre-activations
          } else {
            addmm_split_(xp, h[k], w_hh_t[k]);
          }
          scalar_t* z = xp.data_ptr<scalar_t>();
          scalar_t* h_p = h_next[k].data_ptr<scalar_t>();
          if (cell == kElman) {
            using Vec = at::vec::Vectorized<scalar_t>;
            at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
              at::vec::map([](Vec v) { return fast_tanh(v); }, h_p + b0 * H, z + b0 * H, (b1 - b0) * H);
            });
          } else {
            const scalar_t* cp = c[k].const_data_ptr<scalar_t>();
            scalar_t* cn = c_next[k].data_ptr<scalar_t>();
            scalar_t* tc = tcb.data_ptr<scalar_t>();
            at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
              lstm_forward_rows<scalar_t>(z, cp, cn, tc, h_p, H, b0, b1);
            });
          }
        }
      }
      for (int64_t k = 0; k < L; ++k) {
        std::swap(h[k], h_next[k]);
        if (cell == kLSTM) std::swap(c[k], c_next[k]);
      }
      logits.copy_(dec_b.expand({B, V}));
      addmm_split_(logits, h[L - 1], dec_t);  // (B, V)
      if (keep_logits) kept.select(0, t - 1).copy_(logits);
      const scalar_t* lg = logits.const_data_ptr<scalar_t>();
      const double* u_t = sampling ? u.const_data_ptr<double>() + (t - 1) * B : nullptr;
      const double* st = settings.defined() ? settings.const_data_ptr<double>() : nullptr;
      int64_t* own = tok.data_ptr<int64_t>();
      at::parallel_for(0, B, choose_grain, [&](int64_t b0, int64_t b1) {
        choose_rows<scalar_t>(lg, V, mode, temperature, st, u_t, own, b0, b1);
      });
      const bool* tr = truth.defined() ? truth.const_data_ptr<bool>() : nullptr;
      const int64_t* xv = xs.const_data_ptr<int64_t>();
      for (int64_t b = 0; b < B; ++b) {
        fed_p[b * T + t] = (tr != nullptr && tr[b * (T - 1) + t - 1]) ? xv[b * T + t] : own[b];
      }
    }
  });
  std::vector<Tensor> final_state;
  for (int64_t k = 0; k < L; ++k) {
    final_state.push_back(h[k]);
    if (cell == kLSTM) final_state.push_back(c[k]);
  }
  return {fed, final_state, kept};
}

// ----------------------------------------------------------------------------------------------------------------
// LSTM (PyTorch's gate order i, f, g, o): z = x^p_t + W_hh h_{t-1} (both biases in x^p_t); i, f, o = sig(.),
// g = tanh(.); c_t = f c_{t-1} + i g; h_t = o tanh(c_t).

// xp (T, B, 4H) with both biases, h0, c0 (B, H), w_hh (4H, H) -> out = h_1..h_T, cs = c_1..c_T (T, B, H), and for
// the backward the activated gates (T, B, 4H) and tanh(c_t) (T, B, H).
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_forward(const Tensor& xp, const Tensor& h0_, const Tensor& c0_,
                                                        const Tensor& w_hh) {
  check(xp, "xp");
  const Tensor h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const int64_t T = xp.size(0), B = xp.size(1), H = xp.size(2) / 4;
  TORCH_CHECK(T > 0, "rnnlab lstm_forward: no time steps");
  TORCH_CHECK(xp.size(2) == 4 * H && h0.sizes() == at::IntArrayRef({B, H}) && c0.sizes() == h0.sizes() &&
                  w_hh.sizes() == at::IntArrayRef({4 * H, H}),
              "rnnlab lstm_forward: shapes do not agree");
  Tensor gates = xp.clone(at::MemoryFormat::Contiguous);  // x^p_t, then z_t, then the activated gates
  Tensor out = at::empty({T, B, H}, xp.options()), cs = at::empty({T, B, H}, xp.options());
  Tensor tcs = at::empty({T, B, H}, xp.options());
  const Tensor wt = w_hh.t();
  const int64_t grain = grain_rows(H);
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "lstm_forward", [&] {
    Tensor h_prev = h0;
    const scalar_t* c_prev = c0.const_data_ptr<scalar_t>();
    for (int64_t t = 0; t < T; ++t) {
      Tensor z = gates[t];
      z.addmm_(h_prev, wt);
      scalar_t* zp = z.data_ptr<scalar_t>();
      scalar_t *c_t = cs.data_ptr<scalar_t>() + t * B * H, *tc_t = tcs.data_ptr<scalar_t>() + t * B * H,
               *h_t = out.data_ptr<scalar_t>() + t * B * H;
      at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
        lstm_forward_rows<scalar_t>(zp, c_prev, c_t, tc_t, h_t, H, b0, b1);
      });
      c_prev = c_t;
      h_prev = out[t];
    }
  });
  return {out, cs, gates, tcs};
}

// dout, dcs = dL/dh_t, dL/dc_t from outside (T, B, H) and the forward's values -> dxp = dL/dz (T, B, 4H), dh0, dc0
// (B, H), dw_hh (4H, H). With dh the total gradient reaching h_t and dc the one reaching c_t from step t + 1:
//   do = dh tanh(c) o(1-o);  dc' = dc + dcs_t + dh o (1 - tanh(c)^2);  di = dc' g i(1-i);  df = dc' c_{t-1} f(1-f);
//   dg = dc' i (1-g^2);  dL/dc_{t-1} (through the cell) = dc' f;  dL/dh_{t-1} = dout_{t-1} + dz_t W_hh (the
// product is kept apart, dh_rec, and dout added in the pass: addmm onto dout would first copy it, every step).
template <typename T>
void lstm_backward_rows(const T* dh, const T* dout, const T* dcs, const T* gates, const T* tc, const T* c_prev, T* dc,
                        T* dz, int64_t H, int64_t b0, int64_t b1) {
  using V = at::vec::Vectorized<T>;
  const int64_t W = V::size();
  const V one(T(1));
  for (int64_t b = b0; b < b1; ++b) {
    const T* gb = gates + b * 4 * H;
    T* db = dz + b * 4 * H;
    for (int64_t j = 0; j < H; j += W) {
      const int n = static_cast<int>(std::min(W, H - j));
      const V i = V::loadu(gb + j, n), f = V::loadu(gb + H + j, n), g = V::loadu(gb + 2 * H + j, n),
              o = V::loadu(gb + 3 * H + j, n);
      const V t = V::loadu(tc + b * H + j, n), d_h = V::loadu(dh + b * H + j, n) + V::loadu(dout + b * H + j, n);
      const V dct = V::loadu(dc + b * H + j, n) + V::loadu(dcs + b * H + j, n) + d_h * o * (one - t * t);
      (d_h * t * o * (one - o)).store(db + 3 * H + j, n);
      (dct * g * i * (one - i)).store(db + j, n);
      (dct * V::loadu(c_prev + b * H + j, n) * f * (one - f)).store(db + H + j, n);
      (dct * i * (one - g * g)).store(db + 2 * H + j, n);
      (dct * f).store(dc + b * H + j, n);
    }
  }
}

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_backward(const Tensor& dout_, const Tensor& dcs_, const Tensor& out_,
                                                         const Tensor& cs_, const Tensor& gates_, const Tensor& tcs_,
                                                         const Tensor& h0_, const Tensor& c0_, const Tensor& w_hh) {
  check(out_, "out");
  const Tensor dout = dout_.contiguous(), dcs = dcs_.contiguous(), out = out_.contiguous(), cs = cs_.contiguous();
  const Tensor gates = gates_.contiguous(), tcs = tcs_.contiguous(), h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const int64_t T = out.size(0), B = out.size(1), H = out.size(2);
  TORCH_CHECK(T > 0 && dout.sizes() == out.sizes() && dcs.sizes() == out.sizes() && cs.sizes() == out.sizes() &&
                  tcs.sizes() == out.sizes() && gates.sizes() == at::IntArrayRef({T, B, 4 * H}) &&
                  h0.sizes() == at::IntArrayRef({B, H}) && c0.sizes() == h0.sizes() &&
                  w_hh.sizes() == at::IntArrayRef({4 * H, H}),
              "rnnlab lstm_backward: shapes do not agree");
  Tensor dz = at::empty({T, B, 4 * H}, out.options());
  Tensor dh = at::zeros({B, H}, out.options()), dc = at::zeros({B, H}, out.options());  // dh: dz_{t+1} W_hh
  const int64_t grain = grain_rows(H);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "lstm_backward", [&] {
    for (int64_t t = T - 1; t >= 0; --t) {
      const scalar_t* c_prev = t > 0 ? cs.const_data_ptr<scalar_t>() + (t - 1) * B * H : c0.const_data_ptr<scalar_t>();
      const scalar_t *dh_p = dh.const_data_ptr<scalar_t>(), *dcs_t = dcs.const_data_ptr<scalar_t>() + t * B * H,
                     *dout_t = dout.const_data_ptr<scalar_t>() + t * B * H,
                     *g_t = gates.const_data_ptr<scalar_t>() + t * B * 4 * H,
                     *tc_t = tcs.const_data_ptr<scalar_t>() + t * B * H;
      scalar_t *dc_p = dc.data_ptr<scalar_t>(), *dz_t = dz.data_ptr<scalar_t>() + t * B * 4 * H;
      at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
        lstm_backward_rows<scalar_t>(dh_p, dout_t, dcs_t, g_t, tc_t, c_prev, dc_p, dz_t, H, b0, b1);
      });
      at::mm_out(dh, dz[t], w_hh);  // the recurrent part of dL/dh_{t-1}; at t = 0, dL/dh_0 itself
    }
  });
  Tensor dw = at::mm(dz[0].t(), h0);  // dW = sum_t dz_t^T h_{t-1}
  if (T > 1) dw.addmm_(dz.slice(0, 1).reshape({(T - 1) * B, 4 * H}).t(), out.slice(0, 0, T - 1).reshape({(T - 1) * B, H}));
  return {dz, dh, dc, dw};
}

}  // namespace

TORCH_LIBRARY(rnnlab, m) {
  m.def("decide(Tensor x, Tensor[] state, int cell, Tensor table, Tensor[] w_ih, Tensor[] b_in, Tensor[] w_hh,"
        " Tensor[] b_rec, Tensor dec_w, Tensor dec_b, int mode, float temperature, Tensor? u, Tensor? truth,"
        " Tensor?[] dnn_ih, Tensor?[] dnn_hh, Tensor? settings=None, bool keep_logits=False) -> (Tensor, Tensor[], Tensor)");
  m.def("lstm_forward(Tensor xp, Tensor h0, Tensor c0, Tensor w_hh) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("lstm_backward(Tensor dout, Tensor dcs, Tensor out, Tensor cs, Tensor gates, Tensor tcs, Tensor h0, Tensor c0,"
        " Tensor w_hh) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("elman_forward(Tensor xp, Tensor h0, Tensor w_hh) -> Tensor");
  // for the tests: how a training loop over time of B rows and H units is split at this thread count ("rows",
  // "units" or "none") and the rows or units per block
  m.def("split_plan(str cell, bool backward, int b, int h) -> (str, int)",
        [](std::string cell, bool backward, int64_t b, int64_t h) {
          int64_t block = 0;
          const Split split = plan(cell == "gru", backward, b, h, &block);
          return std::make_tuple(std::string(split == Split::kRows ? "rows" : split == Split::kUnits ? "units" : "none"),
                                 block);
        });
  m.def("elman_backward(Tensor dout, Tensor out, Tensor h0, Tensor w_hh) -> (Tensor, Tensor, Tensor)");
  m.def("gru_forward(Tensor xp, Tensor h0, Tensor w_hh, Tensor b_hh) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("gru_backward(Tensor dout, Tensor out, Tensor h0, Tensor w_hh, Tensor a_n, Tensor rz, Tensor n)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(rnnlab, CPU, m) {
  m.impl("decide", &decide);
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
  m.impl("elman_forward", &elman_forward);
  m.impl("elman_backward", &elman_backward);
  m.impl("gru_forward", &gru_forward);
  m.impl("gru_backward", &gru_backward);
}

// decide's oneDNN-packed matrices are tensors of the MkldnnCPU backend, which then picks the kernel.
TORCH_LIBRARY_IMPL(rnnlab, MkldnnCPU, m) { m.impl("decide", &decide); }
