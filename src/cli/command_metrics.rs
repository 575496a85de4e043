//! The metrics of the services that run commands (`exec`, `shell`): one
//! set of families each, the same shape, read from the service's shared
//! running count and counters.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use wireloop::services::exec::ExecCounters;
use wireloop::services::metrics::Catalog;

/// The label sets of a command service's metrics (`exec`, `shell`).
pub struct CommandLabels {
    /// Family names: commands running, started, killed; request errors.
    names: [&'static str; 4],
    svc: &'static str,
    killed: [&'static str; 3],
    errors: [&'static str; 4],
}

pub const EXEC_LABELS: CommandLabels = CommandLabels {
    names: [
        "wireloop_exec_commands_running",
        "wireloop_exec_commands_started_total",
        "wireloop_exec_commands_killed_total",
        "wireloop_exec_request_errors_total",
    ],
    svc: "service=\"exec\"",
    killed: [
        "service=\"exec\",reason=\"timeout\"",
        "service=\"exec\",reason=\"output_cap\"",
        "service=\"exec\",reason=\"closed\"",
    ],
    errors: [
        "service=\"exec\",kind=\"bad_request\"",
        "service=\"exec\",kind=\"busy\"",
        "service=\"exec\",kind=\"spawn\"",
        "service=\"exec\",kind=\"token\"",
    ],
};

pub const SHELL_LABELS: CommandLabels = CommandLabels {
    names: [
        "wireloop_shell_commands_running",
        "wireloop_shell_commands_started_total",
        "wireloop_shell_commands_killed_total",
        "wireloop_shell_request_errors_total",
    ],
    svc: "service=\"shell\"",
    killed: [
        "service=\"shell\",reason=\"timeout\"",
        "service=\"shell\",reason=\"output_cap\"",
        "service=\"shell\",reason=\"closed\"",
    ],
    errors: [
        "service=\"shell\",kind=\"bad_request\"",
        "service=\"shell\",kind=\"busy\"",
        "service=\"shell\",kind=\"spawn\"",
        "service=\"shell\",kind=\"token\"",
    ],
};

/// Registers a command service's figures with the metrics catalog.
pub fn probe(
    catalog: &RefCell<Catalog>,
    labels: &'static CommandLabels,
    running: Rc<Cell<usize>>,
    counters: Rc<ExecCounters>,
) {
    use wireloop::services::exec::{ERROR_KINDS, KILL_REASONS};
    use wireloop::services::metrics::Family;
    catalog.borrow_mut().probe(move |out| {
        let family = |name, kind, help, samples| Family { name, kind, help, samples };
        let svc = labels.svc;
        out.push(family(labels.names[0], "gauge", "Commands running now.", vec![(svc, running.get() as u64)]));
        out.push(family(labels.names[1], "counter", "Commands started.", vec![(svc, counters.started.get())]));
        let (killed, errors) = (labels.killed, labels.errors);
        debug_assert!(killed.iter().zip(KILL_REASONS).all(|(l, r)| l.contains(r)));
        debug_assert!(errors.iter().zip(ERROR_KINDS).all(|(l, k)| l.contains(k)));
        out.push(family(
            labels.names[2],
            "counter",
            "Commands killed, by reason (timeout, output_cap, closed: the client went away).",
            killed.iter().zip(&counters.killed).map(|(l, c)| (*l, c.get())).collect(),
        ));
        out.push(family(
            labels.names[3],
            "counter",
            "Requests answered with an error, by kind.",
            errors.iter().zip(&counters.errors).map(|(l, c)| (*l, c.get())).collect(),
        ));
    });
}
