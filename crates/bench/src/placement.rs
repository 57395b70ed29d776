//! Pinning the processes of a round to chosen CPUs, the same way for the
//! link and for its baseline, so that their ratio compares like with like.
//!
//! Left to the scheduler, the bare TLS stream's two processes usually
//! share one CPU while alice and bob usually run on two (alice also
//! answers the bench, and three busy processes spread over two CPUs). On
//! these guests a round trip between two CPUs pays two wake-ups of an idle
//! vCPU, 20-30 µs each, that one on a single CPU does not. The ratio the
//! issue defines divides one kind of round trip by the other; the pinned
//! rounds say how much of it is placement. peerd never pins itself: this
//! is the bench's doing, for the length of those rounds only.

use std::io;
use std::mem;

/// Affinities set by [`pin`], put back as they were when dropped (also
/// when the round in between fails).
#[derive(Debug)]
pub(crate) struct Pinned {
    saved: Vec<(libc::pid_t, libc::cpu_set_t)>,
}

/// The CPUs this thread may run on, in order.
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = get(0)?;
    // SAFETY: CPU_ISSET only reads the set, and every index is below
    // CPU_SETSIZE.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Pins each `(pid, cpu)`: `None` is the calling thread (the bench's
/// runtime). A pid names a process's main thread, which is where peerd and
/// the baseline servers run their one runtime thread.
pub(crate) fn pin(assign: &[(Option<u32>, usize)]) -> io::Result<Pinned> {
    let mut pinned = Pinned { saved: Vec::with_capacity(assign.len()) };
    for &(pid, cpu) in assign {
        let pid = match pid {
            None => 0,
            Some(p) => libc::pid_t::try_from(p)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?,
        };
        let before = get(pid)?;
        set(pid, &only(cpu))?;
        pinned.saved.push((pid, before));
    }
    Ok(pinned)
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // Newest first, so a thread pinned twice ends as it started.
        for (pid, before) in self.saved.drain(..).rev() {
            // A process that has gone has nothing to restore.
            let _ = set(pid, &before);
        }
    }
}

fn only(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes one
    // bit of it, and the callers' CPUs come from `allowed_cpus`, below
    // CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

fn get(pid: libc::pid_t) -> io::Result<libc::cpu_set_t> {
    // SAFETY: the kernel writes at most `size_of::<cpu_set_t>()` bytes
    // into `set`, which an all-zero value makes valid.
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        if libc::sched_getaffinity(pid, mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(set)
    }
}

fn set(pid: libc::pid_t, to: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: `to` is a valid set of the size given.
    let rc = unsafe { libc::sched_setaffinity(pid, mem::size_of::<libc::cpu_set_t>(), to) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_this_thread_and_puts_it_back() {
        // On its own thread, so the test harness's threads are untouched.
        std::thread::spawn(|| {
            let cpus = allowed_cpus().expect("affinity");
            assert!(!cpus.is_empty());
            let last = *cpus.last().expect("one CPU at least");
            {
                let _pinned = pin(&[(None, last)]).expect("pin");
                assert_eq!(allowed_cpus().expect("affinity"), vec![last]);
            }
            assert_eq!(allowed_cpus().expect("affinity"), cpus, "restored when dropped");
        })
        .join()
        .expect("the thread");
    }
}
