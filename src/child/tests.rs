//! The child table's promise that matters most: a process group is never
//! signalled by a number whose process was reaped.

use std::os::unix::process::ExitStatusExt;

use super::*;

/// Above any pid the kernel hands out (`pid_max` is at most 2^22), so a
/// signal to it, should one be sent, reaches nobody.
const FAKE: libc::pid_t = 0x3fff_fff0;

fn owner() -> SourceId {
    SourceId::new(1, 1)
}

fn fake(reaped: bool) -> Entry {
    Entry {
        pid: FAKE,
        owner: Some(owner()),
        pipes: Vec::new(),
        inodes: Vec::new(),
        status: Some(ExitStatus::from_raw(0)),
        reaped,
        drain_until: None,
        paused: Vec::new(),
    }
}

#[test]
fn a_reaped_child_is_never_signalled() {
    let mut c = Children::new(Duration::from_millis(100), false);
    c.map.insert(ChildId(u64::MAX), fake(true));
    c.signal(ChildId(u64::MAX), libc::SIGTERM);
    assert!(c.orphan(owner()).is_empty());
    assert!(c.map.is_empty(), "the orphaned, exited child was not ended");
    assert!(c.log.is_empty(), "signalled or reaped a reaped pid: {:?}", c.log);
}

#[test]
fn an_exited_but_unreaped_child_is_signalled_then_reaped() {
    // The same path with the leader kept unreaped: the group is signalled
    // (the log would show it above, had the guard failed).
    sys::kept().push(FAKE);
    let mut c = Children::new(Duration::from_millis(100), false);
    c.map.insert(ChildId(u64::MAX - 1), fake(false));
    c.signal(ChildId(u64::MAX - 1), libc::SIGTERM);
    c.orphan(owner());
    let log = std::mem::take(&mut c.log);
    sys::kept().retain(|p| *p != FAKE);
    assert_eq!(
        log,
        vec![(FAKE, Some(libc::SIGTERM)), (FAKE, Some(libc::SIGKILL)), (FAKE, Some(libc::SIGKILL)), (FAKE, None)]
    );
}

#[test]
fn the_group_is_killed_before_its_leader_is_reaped_and_never_after() {
    let mut c = Children::new(Duration::ZERO, false);
    let (id, child) = spawn(Command::new("/bin/sh").args(["-c", "exit 3"])).unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let _pipes = c.insert(id, child, owner()); // not registered: no pipe to wait for
    let start = Instant::now();
    let ended = loop {
        let ended = c.reap(Instant::now(), true);
        if !ended.is_empty() || start.elapsed() > Duration::from_secs(5) {
            break ended;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].status.code(), Some(3));
    c.signal(id, libc::SIGKILL); // after the end: the id is unknown, nothing is sent
    #[cfg(target_os = "linux")]
    assert_eq!(c.log, vec![(pid, Some(libc::SIGKILL)), (pid, None)]);
    #[cfg(not(target_os = "linux"))]
    assert_eq!(c.log, vec![(pid, None)]);
    let _g = sys::kept();
    assert!(sys::reap(pid).is_err(), "pid {pid} was not reaped");
}

/// Reaps until `c` reports something ended, for at most `limit`.
fn reap_for(c: &mut Children, limit: Duration) -> Vec<Ended> {
    let start = Instant::now();
    loop {
        let ended = c.reap(Instant::now(), true);
        if !ended.is_empty() || start.elapsed() > limit {
            return ended;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_pipe_paused_for_backpressure_holds_the_drain_time() {
    // Drain time zero: an exited child with an open pipe would end at once.
    let mut c = Children::new(Duration::ZERO, false);
    let (id, child) = spawn(Command::new("/bin/sh").args(["-c", "exit 0"])).unwrap();
    let _pipes = c.insert(id, child, owner());
    let pipe = SourceId::new(7, 7);
    c.add_pipe(id, pipe);
    c.set_paused(id, pipe, true, Instant::now());
    assert!(reap_for(&mut c, Duration::from_millis(300)).is_empty(), "ended while its pipe was paused");
    assert_eq!(c.next_deadline(), None, "a paused child must not wake the loop");
    c.set_paused(id, pipe, false, Instant::now());
    let ended = reap_for(&mut c, Duration::from_secs(5));
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].pipes, vec![pipe], "the open pipe is handed back to close");
}
