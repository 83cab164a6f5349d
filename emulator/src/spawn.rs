//! Starts child processes that cannot outlive the emulator: each child asks the kernel for
//! SIGTERM when its parent thread ends (`PR_SET_PDEATHSIG`), and every child is started from one
//! long-lived thread so that "parent thread" means "the emulator".

use std::io;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::mpsc;

type Request = (Command, mpsc::Sender<io::Result<Child>>);

/// A thread that spawns children for the emulator's lifetime.
pub struct Spawner {
    tx: Mutex<mpsc::Sender<Request>>,
}

impl Default for Spawner {
    fn default() -> Self {
        Self::new()
    }
}

impl Spawner {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("engine-spawner".into())
            .spawn(move || {
                for (command, reply) in rx {
                    let _ = reply.send(spawn_tied(command));
                }
            })
            .expect("starting the engine spawner thread");
        Spawner { tx: Mutex::new(tx) }
    }

    /// Starts `command`; the child gets SIGTERM if the emulator dies.
    pub fn spawn(&self, command: Command) -> io::Result<Child> {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((command, reply_tx))
            .map_err(|_| io::Error::other("the engine spawner thread is gone"))?;
        reply_rx
            .recv()
            .map_err(|_| io::Error::other("the engine spawner thread is gone"))?
    }
}

#[cfg(target_os = "linux")]
fn spawn_tied(mut command: Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec and only makes two
    // async-signal-safe system calls (prctl, getppid) and, on failure, _exit.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nobody would send the signal.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    command.spawn()
}

#[cfg(not(target_os = "linux"))]
fn spawn_tied(mut command: Command) -> io::Result<Child> {
    command.spawn()
}
