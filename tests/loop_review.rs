//! Loop behaviours a review of the embedding API found wrong, pinned by
//! tests: the deadline heap under a steady stream of short messages, and a
//! zero-period repeating timer.

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use wireloop::{Config, Context, EventLoop, Flow, Handler, Input};

/// Consumes complete lines; `half\n` shuts our write side after `bye\n`;
/// `close\n` closes.
struct Lines;

impl Handler for Lines {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow {
        while let Some(i) = input.bytes().iter().position(|&b| b == b'\n') {
            let line = input.bytes()[..i].to_vec();
            input.consume(i + 1);
            match &line[..] {
                b"half" => {
                    cx.out().extend_from_slice(b"bye\n");
                    let me = cx.id();
                    cx.shutdown_write(me).unwrap();
                }
                b"close" => return Flow::Close,
                _ => {}
            }
        }
        Flow::Continue
    }
}

fn pump_while(lp: &mut EventLoop, limit: Duration, mut busy: impl FnMut(&EventLoop) -> bool) {
    let start = Instant::now();
    while busy(lp) && start.elapsed() < limit {
        lp.poll_once(Some(Duration::from_millis(5))).unwrap();
    }
}

#[test]
fn short_messages_keep_one_deadline_entry_per_connection() {
    let cfg = Config {
        message_timeout: Duration::from_millis(100),
        idle_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let mut lp = EventLoop::new(cfg).unwrap();
    let addr = lp.listen("127.0.0.1:0".parse().unwrap(), |_| Lines).unwrap().addr;
    let client = thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let start = Instant::now();
        // A message begins, then ends 5 ms later, 100 times a second.
        while start.elapsed() < Duration::from_secs(2) {
            s.write_all(b"x").unwrap();
            thread::sleep(Duration::from_millis(5));
            s.write_all(b"\n").unwrap();
            thread::sleep(Duration::from_millis(5));
        }
        s
    });
    let mut most = 0;
    pump_while(&mut lp, Duration::from_secs(10), |lp| {
        most = most.max(lp.timer_entries());
        !client.is_finished()
    });
    let _s = client.join().unwrap();
    eprintln!("most timer entries for one connection: {most}");
    // Entries left behind by earlier deadlines are skipped when they come
    // due, so at most about idle / message timeout (10) wait at once, plus
    // the armed one. Before the fix every stale entry re-armed a chain of its
    // own: 30 entries after these 2 s, and growing.
    assert!(most <= 16, "the timer heap grew to {most} entries for one connection");
}

#[test]
fn a_zero_period_timer_does_not_spin_the_loop() {
    let mut lp = EventLoop::new(Config::default()).unwrap();
    let ticks = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let t = ticks.clone();
    lp.every(Duration::ZERO, move |_| {
        t.set(t.get() + 1);
        Flow::Continue
    });
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(200) {
        lp.poll_once(Some(Duration::from_millis(50))).unwrap();
    }
    // At least 1 ms apart: at most ~200 ticks in 200 ms, and some.
    let n = ticks.get();
    assert!((1..=220).contains(&n), "{n} ticks in 200 ms");
}

/// Records what each connection receives, in the loop's state.
#[derive(Default)]
struct Seen {
    ids: Vec<wireloop::SourceId>,
    data: Vec<u8>,
}

struct Recorder;

impl Handler<Seen> for Recorder {
    fn on_open(&mut self, cx: &mut Context<'_, Seen>) -> Flow {
        let me = cx.id();
        cx.state_mut().ids.push(me);
        Flow::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Seen>) -> Flow {
        let bytes = input.bytes().to_vec();
        input.consume(bytes.len());
        cx.state_mut().data.extend_from_slice(&bytes);
        Flow::Continue
    }
}

#[test]
fn a_drain_does_not_resume_a_reader_the_embedder_paused() {
    use std::io::Read;
    let cfg = Config { high_water: 64 * 1024, low_water: 16 * 1024, ..Config::default() };
    let mut lp = EventLoop::with_state(cfg, Seen::default()).unwrap();
    let addr = lp.listen("127.0.0.1:0".parse().unwrap(), |_| Recorder).unwrap().addr;
    let mut reader_peer = TcpStream::connect(addr).unwrap();
    let mut target_peer = TcpStream::connect(addr).unwrap();
    let start = Instant::now();
    while lp.state().ids.len() < 2 && start.elapsed() < Duration::from_secs(5) {
        lp.poll_once(Some(Duration::from_millis(5))).unwrap();
    }
    let (reader, target) = (lp.state().ids[0], lp.state().ids[1]);
    // The embedder pauses the reader; then it also waits on a full target.
    lp.pause_reading(reader).unwrap();
    let mut queued = 0;
    while lp.unsent(target).unwrap() <= 64 * 1024 {
        lp.send(target, &[1u8; 64 * 1024]).unwrap();
        queued += 64 * 1024;
        lp.poll_once(Some(Duration::ZERO)).unwrap();
        assert!(queued < 64 << 20, "the target never filled");
    }
    lp.pause_until_drained(reader, target).unwrap();
    // The target's peer reads everything: the target drains.
    let drain = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        target_peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        while got < queued {
            got += target_peer.read(&mut buf).unwrap();
        }
        target_peer
    });
    reader_peer.write_all(b"held\n").unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(400) {
        lp.poll_once(Some(Duration::from_millis(5))).unwrap();
    }
    let _target_peer = drain.join().unwrap();
    assert_eq!(lp.unsent(target), Ok(0), "the target drained");
    assert!(lp.state().data.is_empty(), "the drain resumed a reader the embedder had paused");
    lp.resume_reading(reader).unwrap();
    let start = Instant::now();
    while lp.state().data.is_empty() && start.elapsed() < Duration::from_secs(5) {
        lp.poll_once(Some(Duration::from_millis(5))).unwrap();
    }
    assert_eq!(lp.state().data, b"held\n");
}
