//! Loopback ports for test federations, claimed across processes.
//!
//! A port is claimed by an exclusive lock on a file named after it in a
//! directory every civmesh test process shares, held until this process
//! exits (the kernel releases it even after kill -9). Two test or demo
//! processes running at once therefore never hand out the same port, and
//! a port another program listens on is skipped by a bind probe.
//!
//! Not port 0: the kernel's choice comes from the ephemeral range, where a
//! restarted node could find its old port taken by some client socket's
//! source port. Nodes keep their ports across restarts, so the ports come
//! from below that range instead (docs/decisions.md).

use std::fs::{File, OpenOptions, TryLockError};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;

/// The ports handed out, from below Linux's ephemeral range (32768 and up by
/// default), so a client connection's source port can never take a port a
/// node is about to listen on.
const TESTNET_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// The lock files this process holds, one per port it handed out.
static CLAIMED: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// The directory of the ports' lock files, shared by every test process.
fn claims_dir() -> PathBuf {
    std::env::temp_dir().join("civmesh-testnet-ports")
}

/// A loopback TCP port that no other program listens on now and that no
/// running process (this one included) has claimed; claimed for this
/// process until it exits.
pub fn free_port() -> anyhow::Result<u16> {
    let dir = claims_dir();
    std::fs::create_dir_all(&dir)?;
    let mut claimed = CLAIMED.lock().map_err(|_| anyhow::anyhow!("the port claims' lock is poisoned"))?;
    let span = TESTNET_PORTS.end - TESTNET_PORTS.start;
    // Start where this process's pid points, so concurrent processes rarely
    // contend for the same lock files.
    let start = u16::try_from(std::process::id() % u32::from(span)).unwrap_or(0);
    for step in 0..span {
        let port = TESTNET_PORTS.start + (start + step) % span;
        if let Some(claim) = claim(&dir, port)? {
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                claimed.push(claim);
                return Ok(port);
            }
        }
    }
    anyhow::bail!("no free port in {TESTNET_PORTS:?}")
}

/// The lock on `port`'s file, or None when another open file holds it (in
/// this process or another).
fn claim(dir: &std::path::Path, port: u16) -> anyhow::Result<Option<File>> {
    let file =
        OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(port.to_string()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(error)) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_handed_out_once_and_its_claim_is_held() {
        let first = free_port().unwrap();
        let second = free_port().unwrap();
        assert_ne!(first, second);
        assert!(TESTNET_PORTS.contains(&first) && TESTNET_PORTS.contains(&second));
        // A second open file (another process's view) cannot take the claim.
        assert!(claim(&claims_dir(), first).unwrap().is_none());
    }
}
