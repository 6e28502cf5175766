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
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

namespace {

using at::Tensor;

// Rows of at least this many elements per task: below it a second thread costs more than it saves.
constexpr int64_t kGrainElements = 2048;

int64_t grain_rows(int64_t width) { return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, width)); }

template <typename T>
inline at::vec::Vectorized<T> sigmoid(const at::vec::Vectorized<T>& x) {
  using V = at::vec::Vectorized<T>;
  return V(T(1)) / (V(T(1)) + x.neg().exp());
}

void check(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "rnnlab recurrences: ", name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "rnnlab recurrences: ", name, " must be float32 or float64");
}

// ----------------------------------------------------------------------------------------------------------------
// GRU (PyTorch's): a = W_hh h_{t-1} + b_hh = [a_r, a_z, a_n]; r = sig(x_r + a_r); z = sig(x_z + a_z);
// n = tanh(x_n + r * a_n); h_t = n + z (h_{t-1} - n).

// Rows [b0, b1) of one forward step. x: x^p_t (B, 3H); a: W_hh h_{t-1} without its bias (B, 3H); bias: b_hh (3H);
// hp: h_{t-1} (B, H). (The bias is added here: addmm would first copy it into every row of a, at every step.)
template <typename T>
void gru_forward_rows(const T* x, const T* a, const T* bias, const T* hp, T* rz, T* an, T* n, T* h, int64_t H,
                      int64_t b0, int64_t b1) {
  using V = at::vec::Vectorized<T>;
  const int64_t W = V::size();
  for (int64_t b = b0; b < b1; ++b) {
    const T *xb = x + b * 3 * H, *ab = a + b * 3 * H, *hb = hp + b * H;
    T *rzb = rz + b * 2 * H, *anb = an + b * H, *nb = n + b * H, *h_b = h + b * H;
    for (int64_t j = 0; j < H; j += W) {
      const int c = static_cast<int>(std::min(W, H - j));
      const V r = sigmoid(V::loadu(xb + j, c) + V::loadu(ab + j, c) + V::loadu(bias + j, c));
      const V z = sigmoid(V::loadu(xb + H + j, c) + V::loadu(ab + H + j, c) + V::loadu(bias + H + j, c));
      const V va = V::loadu(ab + 2 * H + j, c) + V::loadu(bias + 2 * H + j, c);
      const V nn = (V::loadu(xb + 2 * H + j, c) + r * va).tanh();
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
  const Tensor xp = xp_.contiguous(), h0 = h0_.contiguous(), bias = b_hh.contiguous();
  const int64_t T = xp.size(0), B = xp.size(1), H = xp.size(2) / 3;
  TORCH_CHECK(T > 0, "rnnlab gru_forward: no time steps");
  TORCH_CHECK(xp.size(2) == 3 * H && h0.sizes() == at::IntArrayRef({B, H}) &&
                  w_hh.sizes() == at::IntArrayRef({3 * H, H}) && bias.sizes() == at::IntArrayRef({3 * H}),
              "rnnlab gru_forward: shapes do not agree");
  Tensor out = at::empty({T, B, H}, xp.options());
  Tensor a_n = at::empty({T, B, H}, xp.options());
  Tensor rz = at::empty({T, B, 2 * H}, xp.options());
  Tensor n = at::empty({T, B, H}, xp.options());
  Tensor a = at::empty({B, 3 * H}, xp.options());
  const Tensor wt = w_hh.t();
  const int64_t grain = grain_rows(H);
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "gru_forward", [&] {
    const scalar_t* hp = h0.const_data_ptr<scalar_t>();
    Tensor h_prev = h0;
    for (int64_t t = 0; t < T; ++t) {
      at::mm_out(a, h_prev, wt);  // (B, 3H)
      const scalar_t *x_t = xp.const_data_ptr<scalar_t>() + t * B * 3 * H, *a_t = a.const_data_ptr<scalar_t>(),
                     *bias_p = bias.const_data_ptr<scalar_t>();
      scalar_t *rz_t = rz.data_ptr<scalar_t>() + t * B * 2 * H, *an_t = a_n.data_ptr<scalar_t>() + t * B * H,
               *n_t = n.data_ptr<scalar_t>() + t * B * H, *h_t = out.data_ptr<scalar_t>() + t * B * H;
      at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
        gru_forward_rows<scalar_t>(x_t, a_t, bias_p, hp, rz_t, an_t, n_t, h_t, H, b0, b1);
      });
      hp = h_t;
      h_prev = out[t];
    }
  });
  return {out, a_n, rz, n};
}

// Rows [b0, b1) of one backward step: from g = dL/dh_t (total), the gradient of the step's pre-activations,
// dxp = [dr, dz, dn] (B, 3H), of a = W_hh h_{t-1} + b_hh, dac = [dr, dz, dn * r] (B, 3H), and the part of
// dL/dh_{t-1} that does not pass through W_hh: gnext = dprev + g z (dprev: dL/dh_{t-1} from above, or none).
template <typename T>
void gru_backward_rows(const T* g, const T* rz, const T* n, const T* an, const T* hp, const T* dprev, T* dxp,
                       T* dac, T* gnext, int64_t H, int64_t b0, int64_t b1) {
  using V = at::vec::Vectorized<T>;
  const int64_t W = V::size();
  const V one(T(1));
  for (int64_t b = b0; b < b1; ++b) {
    const T *gb = g + b * H, *rzb = rz + b * 2 * H, *nb = n + b * H, *anb = an + b * H, *hb = hp + b * H;
    T *dxb = dxp + b * 3 * H, *dab = dac + b * 3 * H, *gn = gnext + b * H;
    for (int64_t j = 0; j < H; j += W) {
      const int c = static_cast<int>(std::min(W, H - j));
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
      if (dprev != nullptr) gz = gz + V::loadu(dprev + b * H + j, c);
      gz.store(gn + j, c);
    }
  }
}

// Saved forward values and dout = dL/dh_1..h_T (T, B, H) -> dxp (T, B, 3H), dh0 (B, H), dw_hh (3H, H), db_hh (3H)
std::tuple<Tensor, Tensor, Tensor, Tensor> gru_backward(const Tensor& dout_, const Tensor& out, const Tensor& h0_,
                                                        const Tensor& w_hh, const Tensor& a_n, const Tensor& rz,
                                                        const Tensor& n) {
  check(out, "out");
  const Tensor dout = dout_.contiguous(), h0 = h0_.contiguous();
  const int64_t T = out.size(0), B = out.size(1), H = out.size(2);
  Tensor dxp = at::empty({T, B, 3 * H}, out.options());
  Tensor dac = at::empty({T, B, 3 * H}, out.options());
  Tensor g = dout[T - 1].clone(), g_next = at::empty({B, H}, out.options());
  const int64_t grain = grain_rows(H);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "gru_backward", [&] {
    for (int64_t t = T - 1; t >= 0; --t) {
      const scalar_t* hp = t > 0 ? out.const_data_ptr<scalar_t>() + (t - 1) * B * H : h0.const_data_ptr<scalar_t>();
      const scalar_t* dprev = t > 0 ? dout.const_data_ptr<scalar_t>() + (t - 1) * B * H : nullptr;
      const scalar_t *g_p = g.const_data_ptr<scalar_t>(), *rz_t = rz.const_data_ptr<scalar_t>() + t * B * 2 * H,
                     *n_t = n.const_data_ptr<scalar_t>() + t * B * H, *an_t = a_n.const_data_ptr<scalar_t>() + t * B * H;
      scalar_t *dx_t = dxp.data_ptr<scalar_t>() + t * B * 3 * H, *da_t = dac.data_ptr<scalar_t>() + t * B * 3 * H,
               *gn = g_next.data_ptr<scalar_t>();
      at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
        gru_backward_rows<scalar_t>(g_p, rz_t, n_t, an_t, hp, dprev, dx_t, da_t, gn, H, b0, b1);
      });
      g_next.addmm_(dac[t], w_hh);  // + (dL/da_t) W_hh
      std::swap(g, g_next);
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

// xp (T, B, H), h0 (B, H), w_hh (H, H) -> out = h_1..h_T (T, B, H)
Tensor elman_forward(const Tensor& xp, const Tensor& h0_, const Tensor& w_hh) {
  check(xp, "xp");
  const Tensor h0 = h0_.contiguous();
  const int64_t T = xp.size(0), B = xp.size(1), H = xp.size(2);
  TORCH_CHECK(T > 0, "rnnlab elman_forward: no time steps");
  TORCH_CHECK(h0.sizes() == at::IntArrayRef({B, H}) && w_hh.sizes() == at::IntArrayRef({H, H}),
              "rnnlab elman_forward: shapes do not agree");
  Tensor out = xp.clone(at::MemoryFormat::Contiguous);  // x^p_t, then h_t in place
  const Tensor wt = w_hh.t();
  const int64_t grain = grain_rows(H);
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "elman_forward", [&] {
    using V = at::vec::Vectorized<scalar_t>;
    Tensor h_prev = h0;
    for (int64_t t = 0; t < T; ++t) {
      Tensor h_t = out[t];
      h_t.addmm_(h_prev, wt);
      scalar_t* p = h_t.data_ptr<scalar_t>();
      at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
        at::vec::map([](V v) { return v.tanh(); }, p + b0 * H, p + b0 * H, (b1 - b0) * H);
      });
      h_prev = h_t;
    }
  });
  return out;
}

// dout = dL/dh_1..h_T (T, B, H) and the forward's out -> dxp (T, B, H), dh0 (B, H), dw_hh (H, H), with
// delta_t = (dout_t + delta_{t+1} W_hh) * (1 - h_t^2).
std::tuple<Tensor, Tensor, Tensor> elman_backward(const Tensor& dout, const Tensor& out, const Tensor& h0_,
                                                  const Tensor& w_hh) {
  check(out, "out");
  const Tensor h0 = h0_.contiguous();
  const int64_t T = out.size(0), B = out.size(1), H = out.size(2);
  Tensor delta = dout.clone(at::MemoryFormat::Contiguous);  // dout_t, then delta_t in place
  const int64_t grain = grain_rows(H);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "elman_backward", [&] {
    using V = at::vec::Vectorized<scalar_t>;
    for (int64_t t = T - 1; t >= 0; --t) {
      Tensor d_t = delta[t];
      if (t < T - 1) d_t.addmm_(delta[t + 1], w_hh);
      scalar_t* d = d_t.data_ptr<scalar_t>();
      const scalar_t* h = out.const_data_ptr<scalar_t>() + t * B * H;
      at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
        at::vec::map2([](V dv, V hv) { return dv * (V(scalar_t(1)) - hv * hv); }, d + b0 * H, d + b0 * H,
                      h + b0 * H, (b1 - b0) * H);
      });
    }
  });
  Tensor dh0 = at::mm(delta[0], w_hh);
  Tensor dw = at::mm(delta[0].t(), h0);  // dW = sum_t delta_t^T h_{t-1}
  if (T > 1) dw.addmm_(delta.slice(0, 1).reshape({(T - 1) * B, H}).t(), out.slice(0, 0, T - 1).reshape({(T - 1) * B, H}));
  return {delta, dh0, dw};
}

}  // namespace

TORCH_LIBRARY(rnnlab, m) {
  m.def("elman_forward(Tensor xp, Tensor h0, Tensor w_hh) -> Tensor");
  m.def("elman_backward(Tensor dout, Tensor out, Tensor h0, Tensor w_hh) -> (Tensor, Tensor, Tensor)");
  m.def("gru_forward(Tensor xp, Tensor h0, Tensor w_hh, Tensor b_hh) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("gru_backward(Tensor dout, Tensor out, Tensor h0, Tensor w_hh, Tensor a_n, Tensor rz, Tensor n)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(rnnlab, CPU, m) {
  m.impl("elman_forward", &elman_forward);
  m.impl("elman_backward", &elman_backward);
  m.impl("gru_forward", &gru_forward);
  m.impl("gru_backward", &gru_backward);
}
