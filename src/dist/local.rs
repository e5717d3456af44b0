//! Ranks as threads of one process: a [`Comm`] over shared mailboxes, for tests of the
//! data-parallel path without MPI (and for trying it in one process). Sends complete at
//! once (the message is copied into the mailbox); a receive completes once its message
//! has arrived.

use super::{Comm, Req};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

type Key = (usize, usize, u16);

#[derive(Default)]
struct Boxes {
    /// Messages by (from, to, tag), in the order sent.
    queues: HashMap<Key, VecDeque<Vec<u8>>>,
}

struct Shared {
    boxes: Mutex<Boxes>,
    arrived: Condvar,
}

/// A receive posted and not yet matched.
struct Pending {
    buf: *mut f32,
    len: usize,
    from: usize,
    tag: u16,
}

/// One rank of a group of threads.
pub struct Local {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
    pending: HashMap<usize, Pending>,
    next: usize,
}

// SAFETY: the raw pointers in `pending` point into buffers the caller of `irecv`
// promises to keep valid and untouched until the receive completes; a `Local` is used
// by one thread at a time.
unsafe impl Send for Local {}

/// The tag of `all_gather`'s messages (gradient buckets use small tags).
const GATHER: u16 = u16::MAX;

impl Local {
    /// `size` ranks that talk to each other, one per thread.
    pub fn group(size: usize) -> Vec<Local> {
        let shared = Arc::new(Shared {
            boxes: Mutex::new(Boxes::default()),
            arrived: Condvar::new(),
        });
        (0..size)
            .map(|rank| Local {
                rank,
                size,
                shared: shared.clone(),
                pending: HashMap::new(),
                next: 1,
            })
            .collect()
    }

    fn put(&self, to: usize, tag: u16, bytes: Vec<u8>) {
        let mut boxes = self.shared.boxes.lock().unwrap_or_else(|e| e.into_inner());
        let q = boxes.queues.entry((self.rank, to, tag)).or_default();
        q.push_back(bytes);
        self.shared.arrived.notify_all();
    }

    fn take(&self, from: usize, tag: u16, wait: bool) -> Option<Vec<u8>> {
        let mut boxes = self.shared.boxes.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let q = boxes.queues.entry((from, self.rank, tag)).or_default();
            if let Some(m) = q.pop_front() {
                return Some(m);
            }
            if !wait {
                return None;
            }
            boxes = (self.shared.arrived.wait(boxes)).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Comm for Local {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    unsafe fn isend(&mut self, buf: *const f32, len: usize, to: usize, tag: u16) -> Req {
        // SAFETY: the caller promises `buf..buf+len` is valid.
        let values = unsafe { std::slice::from_raw_parts(buf, len) };
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.put(to, tag, bytes);
        Req(0)
    }

    unsafe fn irecv(&mut self, buf: *mut f32, len: usize, from: usize, tag: u16) -> Req {
        let id = self.next;
        self.next += 1;
        self.pending.insert(
            id,
            Pending {
                buf,
                len,
                from,
                tag,
            },
        );
        Req(id)
    }

    fn test(&mut self, req: &mut Req) -> bool {
        if req.0 == 0 {
            return true;
        }
        let Some(p) = self.pending.get(&req.0) else {
            return true;
        };
        let Some(bytes) = self.take(p.from, p.tag, false) else {
            return false;
        };
        assert_eq!(bytes.len(), 4 * p.len, "a message of another length");
        // SAFETY: the caller of `irecv` keeps the buffer valid and untouched until now.
        let out = unsafe { std::slice::from_raw_parts_mut(p.buf, p.len) };
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        self.pending.remove(&req.0);
        req.0 = 0;
        true
    }

    fn all_gather(&mut self, mine: &[u8], out: &mut [u8]) {
        let n = mine.len();
        for to in (0..self.size).filter(|&r| r != self.rank) {
            self.put(to, GATHER, mine.to_vec());
        }
        for from in 0..self.size {
            let dst = &mut out[from * n..(from + 1) * n];
            if from == self.rank {
                dst.copy_from_slice(mine);
            } else if let Some(m) = self.take(from, GATHER, true) {
                dst.copy_from_slice(&m);
            }
        }
    }
}
