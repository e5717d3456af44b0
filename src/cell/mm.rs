//! The matrix-product capability a cell's kernels are handed. Cells own their step loops
//! (each step's recurrent product and fused elementwise pass) but never call BLAS: the
//! executor passes an implementation of [`MatMul`] that goes through `exec::gemm`, the
//! one BLAS gateway. Tests pass a naive implementation.

/// Whether an operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tr {
    /// As stored.
    N,
    /// Transposed.
    T,
}

/// A row-major matrix operand: its elements and the distance between consecutive rows
/// as stored (`ld ≥` the stored row length; equal to it for a contiguous matrix).
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    /// The elements, from the first element of the first row.
    pub data: &'a [f32],
    /// Elements from one stored row to the next.
    pub ld: usize,
    /// Used as stored or transposed.
    pub tr: Tr,
}

impl<'a> Mat<'a> {
    /// A contiguous operand used as stored; its rows are `cols` long.
    pub fn n(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            ld: cols,
            tr: Tr::N,
        }
    }

    /// A contiguous operand used transposed; its stored rows are `cols` long.
    pub fn t(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            ld: cols,
            tr: Tr::T,
        }
    }

    /// A contiguous operand whose logical shape (`op(A)`) is `rows × cols`: stored
    /// [rows, cols] for `Tr::N`, [cols, rows] for `Tr::T`.
    pub fn contiguous(data: &'a [f32], rows: usize, cols: usize, tr: Tr) -> Self {
        let ld = match tr {
            Tr::N => cols,
            Tr::T => rows,
        };
        Mat {
            data,
            ld: ld.max(1),
            tr,
        }
    }
}

/// `C[m×n] = op(A)[m×k] · op(B)[k×n] + β·C`, all row-major. `c_ld` is the distance
/// between rows of C (`n` when contiguous).
pub trait MatMul {
    /// The product with explicit operands.
    #[allow(clippy::too_many_arguments)]
    fn mm(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: Mat<'_>,
        b: Mat<'_>,
        beta: f32,
        c: &mut [f32],
        c_ld: usize,
    );

    /// Runs `first` and `second`, which touch disjoint data, possibly at the same time
    /// (the executor hands `second` to its helper thread). By default one after the
    /// other.
    fn join(&self, first: &mut (dyn FnMut() + Send), second: &mut (dyn FnMut() + Send)) {
        first();
        second();
    }

    /// Whether `join` runs its two halves at the same time: a cell splits a step's
    /// elementwise pass over its batch rows, and a segment-wide pass (`cell::steps`'s
    /// `…_par`) its rows or columns, only then.
    fn parallel(&self) -> bool {
        false
    }

    /// The product of contiguous matrices: `A` stored [m, k] (`Tr::N`) or [k, m]
    /// (`Tr::T`), `B` stored [k, n] or [n, k], `C` [m, n].
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        ta: Tr,
        b: &[f32],
        tb: Tr,
        beta: f32,
        c: &mut [f32],
    ) {
        let (a, b) = (Mat::contiguous(a, m, k, ta), Mat::contiguous(b, k, n, tb));
        self.mm(m, n, k, a, b, beta, c, n);
    }
}

/// A plain triple loop, for unit tests of the kernels (no BLAS in `cell`).
#[derive(Clone, Copy, Debug, Default)]
pub struct NaiveMatMul;

impl MatMul for NaiveMatMul {
    fn mm(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: Mat<'_>,
        b: Mat<'_>,
        beta: f32,
        c: &mut [f32],
        c_ld: usize,
    ) {
        let at = |i: usize, p: usize| match a.tr {
            Tr::N => a.data[i * a.ld + p],
            Tr::T => a.data[p * a.ld + i],
        };
        let bt = |p: usize, j: usize| match b.tr {
            Tr::N => b.data[p * b.ld + j],
            Tr::T => b.data[j * b.ld + p],
        };
        for i in 0..m {
            for j in 0..n {
                let s: f32 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
                let o = &mut c[i * c_ld + j];
                *o = if beta == 0.0 { s } else { beta * *o + s };
            }
        }
    }
}
