//! The [`Comm`] over MPI (rsmpi against the system's Open MPI): a process launched by
//! `mpirun` or `srun` is one rank of the job. [`World`] initialises MPI and finalises
//! it when dropped; each ring gets its own duplicate of the world communicator, so its
//! messages never meet the setup's.

use super::{Comm, Req};
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::CommunicatorCollectives;
use std::os::raw::{c_int, c_void};

/// MPI, initialised: the world's rank and size. Finalises MPI when dropped (after
/// every communicator made from it).
pub struct World {
    world: SimpleCommunicator,
    _universe: mpi::environment::Universe,
}

impl World {
    /// Initialises MPI; `None` if it cannot be (already initialised, or no runtime).
    pub fn init() -> Option<World> {
        // Other threads exist (OpenBLAS's, the signal watcher); MPI is called from this
        // one only.
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)?;
        let world = universe.world();
        Some(World {
            world,
            _universe: universe,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    /// Ranks in the job.
    pub fn size(&self) -> usize {
        self.world.size() as usize
    }

    /// A transport on a communicator of its own (a duplicate of the world's).
    pub fn comm(&self) -> Mpi {
        Mpi {
            comm: self.world.duplicate(),
            reqs: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Ends every rank of the job at once with `code` (a rank's error mid-run: the
    /// others may be waiting for it).
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

/// Ends every rank of the job at once with `code`, from anywhere (a panic hook).
pub fn abort_world(code: i32) -> ! {
    // SAFETY: MPI_Abort may be called at any point after initialisation.
    unsafe {
        ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, code);
    }
    std::process::abort()
}

/// One rank's transport on its own communicator.
pub struct Mpi {
    comm: SimpleCommunicator,
    /// Outstanding requests by `Req` index; freed slots are reused, so a step's
    /// messages allocate nothing once the first step has grown the table.
    reqs: Vec<ffi::MPI_Request>,
    free: Vec<usize>,
}

impl Mpi {
    fn slot(&mut self, r: ffi::MPI_Request) -> Req {
        match self.free.pop() {
            Some(i) => {
                self.reqs[i] = r;
                Req(i)
            }
            None => {
                self.reqs.push(r);
                Req(self.reqs.len() - 1)
            }
        }
    }
}

impl Comm for Mpi {
    fn rank(&self) -> usize {
        self.comm.rank() as usize
    }

    fn size(&self) -> usize {
        self.comm.size() as usize
    }

    unsafe fn isend(&mut self, buf: *const f32, len: usize, to: usize, tag: u16) -> Req {
        // SAFETY: a null request is overwritten by MPI_Isend.
        let mut r: ffi::MPI_Request = unsafe { ffi::RSMPI_REQUEST_NULL };
        // SAFETY: the caller keeps the buffer valid and unchanged until completion.
        unsafe {
            ffi::MPI_Isend(
                buf as *const c_void,
                len as c_int,
                ffi::RSMPI_FLOAT,
                to as c_int,
                c_int::from(tag),
                self.comm.as_raw(),
                &mut r,
            );
        }
        self.slot(r)
    }

    unsafe fn irecv(&mut self, buf: *mut f32, len: usize, from: usize, tag: u16) -> Req {
        // SAFETY: as in `isend`.
        let mut r: ffi::MPI_Request = unsafe { ffi::RSMPI_REQUEST_NULL };
        // SAFETY: the caller keeps the buffer valid and untouched until completion.
        unsafe {
            ffi::MPI_Irecv(
                buf as *mut c_void,
                len as c_int,
                ffi::RSMPI_FLOAT,
                from as c_int,
                c_int::from(tag),
                self.comm.as_raw(),
                &mut r,
            );
        }
        self.slot(r)
    }

    fn test(&mut self, req: &mut Req) -> bool {
        if req.0 == usize::MAX {
            return true;
        }
        let mut flag: c_int = 0;
        // SAFETY: the request is one MPI returned and has not completed yet.
        unsafe {
            ffi::MPI_Test(&mut self.reqs[req.0], &mut flag, ffi::RSMPI_STATUS_IGNORE);
        }
        if flag != 0 {
            self.free.push(req.0);
            req.0 = usize::MAX;
        }
        flag != 0
    }

    fn all_gather(&mut self, mine: &[u8], out: &mut [u8]) {
        self.comm.all_gather_into(mine, out);
    }
}
