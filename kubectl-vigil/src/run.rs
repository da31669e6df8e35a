//! The kube boundary: read what a command needs, write what it changes, print. Everything it
//! decides is in the pure modules.

use std::io::Write;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use vigil_crds::rollout::{ManualActionKind, Pin};
use vigil_crds::{AgentRollout, AgentStatus, agent};
use vigil_plan::facts::{Interner, LeaseFacts, NodeFacts, PodFacts, StatusFacts};
use vigil_plan::observe;
use vigil_plan::{NodeView, selector_matches};

use crate::actions::{self, Change};
use crate::cli::{ActArgs, ChangeArgs, Cli, Command, Output};
use crate::render::{self, Paint};
use crate::view::{self, Decision};

/// Exit status: the command did what was asked.
pub const OK: i32 = 0;
/// Exit status: an error (the API, a name not found, a change refused).
pub const FAILED: i32 = 1;
/// Exit status of `status --watch`: the rollout ended rolled back or failed.
pub const ENDED_BADLY: i32 = 3;
/// Exit status: a wait timed out.
pub const TIMED_OUT: i32 = 4;

/// Where a command runs: the client, the namespace of the context, the clock and the output.
pub struct Env<'a> {
    /// The API client.
    pub client: Client,
    /// The kubeconfig context's namespace (`default` when it names none).
    pub default_namespace: String,
    /// Standard output.
    pub out: &'a mut (dyn Write + Send),
    /// Standard error.
    pub err: &'a mut (dyn Write + Send),
    /// Colour.
    pub paint: Paint,
    /// The time now.
    pub clock: fn() -> Timestamp,
}

/// A failure with its exit status.
#[derive(Debug)]
pub struct Failure {
    /// Exit status.
    pub code: i32,
    /// What went wrong.
    pub message: String,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Self { code: FAILED, message: e.to_string() }
    }
}

/// An object as the API returned it, every string (agent-written reasons, Event notes,
/// annotations, names) made printable ([`vigil_crds::text::printable`]) before anything of
/// it is shown: every object the plugin reads comes through here, so no command can print an
/// agent's or a tenant's terminal escapes, whatever it later shows of the object.
fn clean<T: Serialize + serde::de::DeserializeOwned>(obj: T) -> Result<T, Failure> {
    let mut v = serde_json::to_value(&obj)?;
    vigil_crds::text::printable_json(&mut v);
    Ok(serde_json::from_value(v)?)
}

fn clean_all<T: Serialize + serde::de::DeserializeOwned>(items: Vec<T>) -> Result<Vec<T>, Failure> {
    items.into_iter().map(clean).collect()
}

fn fail(message: impl Into<String>) -> Failure {
    Failure { code: FAILED, message: message.into() }
}

/// Runs one command; returns its exit status (errors are printed to `env.err`).
pub async fn run(cli: Cli, env: &mut Env<'_>) -> i32 {
    match dispatch(&cli, env).await {
        Ok(code) => code,
        Err(f) => {
            let mut lines = f.message.trim_end_matches('\n').split('\n');
            let _ = writeln!(env.err, "error: {}", vigil_crds::text::printable(lines.next().unwrap_or("")));
            for line in lines {
                let _ = writeln!(env.err, "{}", vigil_crds::text::printable(line));
            }
            f.code
        }
    }
}

async fn dispatch(cli: &Cli, env: &mut Env<'_>) -> Result<i32, Failure> {
    let ns = cli.namespace.as_deref();
    match &cli.command {
        Command::Status(a) => status(env, ns, a.rollout.as_deref(), a, cli.output).await,
        Command::Pause(a) => change(env, ns, a, Change::Pause, cli.output).await,
        Command::Resume(a) => change(env, ns, a, Change::Resume, cli.output).await,
        Command::Freeze(a) => change(env, ns, a, Change::Freeze, cli.output).await,
        Command::Unfreeze(a) => change(env, ns, a, Change::Unfreeze, cli.output).await,
        Command::Promote(a) => change(env, ns, a, Change::Action(ManualActionKind::Promote, None), cli.output).await,
        Command::Abort(a) => change(env, ns, a, Change::Action(ManualActionKind::Abort, None), cli.output).await,
        Command::Retry(a) => change(env, ns, a, Change::Action(ManualActionKind::Retry, None), cli.output).await,
        Command::Rollback(a) => {
            let to = match &a.to {
                Some(to) => {
                    let r = find_rollout(env, ns, a.act.rollout.as_deref()).await?;
                    Some(actions::rollback_target(&r, to).map_err(fail)?)
                }
                None => None,
            };
            change(env, ns, &a.act, Change::Action(ManualActionKind::Rollback, to), cli.output).await
        }
        Command::Pin(a) => {
            let selector = crate::selector::parse(&a.selector).map_err(|e| fail(format!("--selector: {e}")))?;
            if !dns_label(&a.group) {
                return Err(fail(format!(
                    "pin name {:?}: it must be a DNS label (lowercase letters, digits, '-'; at most 63)",
                    a.group
                )));
            }
            let pin = Pin {
                name: a.group.clone(),
                node_selector: selector,
                revision: a.revision.clone(),
                reason: a.reason.clone(),
            };
            let act = ActArgs { rollout: a.rollout.clone(), change: a.change.clone() };
            let r = find_rollout_as_stored(env, ns, act.rollout.as_deref()).await?;
            // Which nodes the pin holds now: the selector is the API's own syntax.
            let nodes: Api<Node> = Api::all(env.client.clone());
            let held: Vec<String> = nodes
                .list_metadata(&ListParams::default().labels(&a.selector))
                .await?
                .items
                .into_iter()
                .filter(|n| {
                    r.spec
                        .node_selector
                        .as_ref()
                        .is_none_or(|s| selector_matches(s, n.metadata.labels.as_ref().unwrap_or(&Default::default())))
                })
                .filter_map(|n| n.metadata.name)
                .collect();
            let _ = writeln!(env.out, "{}", held_line(&held));
            change_on(env, r, &act, Change::Pin(pin), cli.output).await
        }
        Command::Unpin(a) => {
            let act = ActArgs { rollout: a.rollout.clone(), change: a.change.clone() };
            change(env, ns, &act, Change::Unpin(a.group.clone()), cli.output).await
        }
        Command::Agents(a) => agents(env, a, cli.output).await,
        Command::Why(a) => why(env, &a.node, cli.output).await,
        Command::Cleanup(a) => {
            let ns = ns.unwrap_or(&env.default_namespace).to_owned();
            cleanup(env, &ns, a, cli.output).await
        }
        Command::Completion(a) => {
            completion(a.shell, env.out)?;
            Ok(OK)
        }
    }
}

/// Writes the completion script of `shell` for `kubectl-vigil`.
pub fn completion(shell: clap_complete::Shell, out: &mut dyn Write) -> std::io::Result<()> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut buf: Vec<u8> = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kubectl-vigil", &mut buf);
    out.write_all(&buf)
}

fn held_line(held: &[String]) -> String {
    let first: Vec<&str> = held.iter().take(10).map(String::as_str).collect();
    match held.len() {
        0 => "the selector matches none of the rollout's nodes now (the pin holds nodes that get its labels later)"
            .into(),
        n if n > first.len() => format!("the selector matches {n} of the rollout's nodes now: {}, …", first.join(", ")),
        n => format!("the selector matches {n} of the rollout's nodes now: {}", first.join(", ")),
    }
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The rollout a command names: `name` in the namespace given (or the context's); a name
/// given without `-n` that is not there is looked for in every namespace; no name takes the
/// only rollout there is.
pub async fn find_rollout(env: &Env<'_>, ns: Option<&str>, name: Option<&str>) -> Result<AgentRollout, Failure> {
    clean(find_rollout_as_stored(env, ns, name).await?)
}

/// The rollout as the API server stores it (its strings not escaped): what a change is
/// computed from, so that writing it back keeps every string as it was. Shown only through
/// [`say`] or [`emit`].
async fn find_rollout_as_stored(env: &Env<'_>, ns: Option<&str>, name: Option<&str>) -> Result<AgentRollout, Failure> {
    let here = ns.unwrap_or(&env.default_namespace);
    let key = |r: &AgentRollout| format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any());
    match name {
        Some(name) => {
            let api: Api<AgentRollout> = Api::namespaced(env.client.clone(), here);
            if let Some(r) = api.get_opt(name).await? {
                return Ok(r);
            }
            if ns.is_some() {
                return Err(fail(format!("no AgentRollout {name} in namespace {here}")));
            }
            let all = Api::<AgentRollout>::all(env.client.clone()).list(&ListParams::default()).await?.items;
            let named: Vec<AgentRollout> = all.into_iter().filter(|r| r.name_any() == name).collect();
            match named.len() {
                1 => Ok(named.into_iter().next().unwrap_or_else(|| unreachable!())),
                0 => Err(fail(format!("no AgentRollout {name} in namespace {here} or any other"))),
                _ => Err(fail(format!(
                    "AgentRollouts named {name} exist in several namespaces ({}): say which with -n",
                    named.iter().map(key).collect::<Vec<_>>().join(", ")
                ))),
            }
        }
        None => {
            let api: Api<AgentRollout> = match ns {
                Some(ns) => Api::namespaced(env.client.clone(), ns),
                None => Api::all(env.client.clone()),
            };
            let all = api.list(&ListParams::default()).await?.items;
            match all.len() {
                1 => Ok(all.into_iter().next().unwrap_or_else(|| unreachable!())),
                0 => Err(fail(format!(
                    "no AgentRollout {}",
                    ns.map_or("in the cluster".to_owned(), |n| format!("in namespace {n}"))
                ))),
                _ => Err(fail(format!(
                    "several AgentRollouts ({}): name one",
                    all.iter().map(key).collect::<Vec<_>>().join(", ")
                ))),
            }
        }
    }
}

/// Everything the planner views of a fleet are made of: the facts the operator keeps of each
/// object ([`vigil_plan::facts`]), and the AgentStatuses whole (`why` shows what the agent
/// said).
struct Cluster {
    nodes: Vec<NodeFacts>,
    pods: Vec<PodFacts>,
    leases: Vec<LeaseFacts>,
    statuses: Vec<AgentStatus>,
    status_facts: Vec<StatusFacts>,
}

impl Cluster {
    /// Reads nodes and AgentStatuses, and the agent pods and Leases of `ns` (every namespace
    /// when `None`).
    async fn read(client: &Client, ns: Option<&str>) -> Result<Self, Failure> {
        let sel = ListParams::default().labels(agent::SELECTOR);
        let (pods, leases): (Api<Pod>, Api<Lease>) = match ns {
            Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let mut strings = Interner::default();
        let nodes = clean_all(Api::<Node>::all(client.clone()).list(&ListParams::default()).await?.items)?;
        let pods = clean_all(pods.list(&sel).await?.items)?;
        let leases = clean_all(leases.list(&sel).await?.items)?;
        let statuses = clean_all(Api::<AgentStatus>::all(client.clone()).list(&ListParams::default()).await?.items)?;
        Ok(Self {
            nodes: nodes.iter().map(|n| NodeFacts::of(n, &mut strings)).collect(),
            pods: pods.iter().map(|p| PodFacts::of(p, &mut strings)).collect(),
            leases: leases.iter().map(|l| LeaseFacts::of(l, &mut strings)).collect(),
            status_facts: statuses.iter().map(|s| StatusFacts::of(s, &mut strings)).collect(),
            statuses,
        })
    }

    /// The planner's view of the nodes `r` selects, as the operator builds it.
    fn fleet(&self, r: &AgentRollout) -> Vec<NodeView> {
        let ns = r.namespace().unwrap_or_default();
        observe::node_views(
            self.nodes.iter().filter(|n| r.spec.node_selector.as_ref().is_none_or(|s| selector_matches(s, &n.labels))),
            self.pods.iter().filter(|p| p.namespace == ns),
            self.leases.iter().filter(|l| l.namespace == ns),
            self.status_facts.iter(),
        )
    }
}

/// The operator's decisions about `r`: its Events, newest first. Unreadable Events (RBAC)
/// give none and a warning.
async fn decisions(env: &mut Env<'_>, r: &AgentRollout) -> Vec<Decision> {
    let ns = r.namespace().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(env.client.clone(), &ns);
    let lp =
        ListParams::default().fields(&format!("involvedObject.kind=AgentRollout,involvedObject.name={}", r.name_any()));
    match api.list(&lp).await.map_err(Failure::from).and_then(|l| clean_all(l.items)) {
        Ok(items) => items
            .into_iter()
            .filter(|e| e.involved_object.uid.is_none() || e.involved_object.uid == r.metadata.uid)
            .map(|e| Decision {
                time: e
                    .event_time
                    .map(|t| t.0)
                    .or(e.last_timestamp.map(|t| t.0))
                    .or(e.metadata.creation_timestamp.map(|t| t.0)),
                type_: e.type_.unwrap_or_else(|| "Normal".into()),
                reason: e.reason.unwrap_or_default(),
                note: e.message.unwrap_or_default(),
            })
            .collect(),
        Err(e) => {
            let _ = writeln!(
                env.err,
                "warning: the rollout's Events could not be read ({}); decisions not shown",
                vigil_crds::text::printable(&e.message)
            );
            Vec::new()
        }
    }
}

/// Text for a person that may quote what others wrote (a pin's reason, the stored spec),
/// escaped line by line: the lines stay lines, nothing else controls the terminal.
fn say(out: &mut (dyn Write + Send), text: &str) -> Result<(), Failure> {
    for line in text.trim_end_matches('\n').split('\n') {
        writeln!(out, "{}", vigil_crds::text::printable(line))?;
    }
    Ok(())
}

fn emit<T: Serialize>(out: &mut (dyn Write + Send), format: Output, v: &T) -> Result<(), Failure> {
    // Whatever the value holds (a change's apply body is the stored object's own text), its
    // strings are shown escaped.
    let mut v = serde_json::to_value(v)?;
    vigil_crds::text::printable_json(&mut v);
    match format {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?,
        Output::Yaml => write!(out, "{}", serde_yaml::to_string(&v)?)?,
        Output::Text => {}
    }
    Ok(())
}

async fn status(
    env: &mut Env<'_>,
    ns: Option<&str>,
    name: Option<&str>,
    a: &crate::cli::StatusArgs,
    format: Output,
) -> Result<i32, Failure> {
    let first = find_rollout(env, ns, name).await?;
    let (rns, rname) = (first.namespace().unwrap_or_default(), first.name_any());
    let api: Api<AgentRollout> = Api::namespaced(env.client.clone(), &rns);
    let started = tokio::time::Instant::now();
    let mut last_frame: Option<String> = None;
    let mut rollout = first;
    loop {
        let cluster = Cluster::read(&env.client, Some(&rns)).await?;
        let events = decisions(env, &rollout).await;
        let now = (env.clock)();
        let v = view::status_view(&rollout, &cluster.fleet(&rollout), events, now);
        // In a watch, a frame is printed when something changed (on a terminal: every time,
        // as the times in it move).
        let frame = serde_json::to_string(&v)?;
        if !a.watch || env.paint.on || last_frame.as_ref() != Some(&frame) {
            match format {
                Output::Text => {
                    if a.watch && env.paint.on {
                        write!(env.out, "\x1b[H\x1b[2J")?;
                    } else if last_frame.is_some() {
                        writeln!(env.out)?;
                    }
                    write!(env.out, "{}", render::status(&v, now, a.nodes, env.paint))?;
                }
                Output::Json if a.watch => writeln!(env.out, "{frame}")?,
                Output::Yaml if a.watch => write!(env.out, "---\n{}", serde_yaml::to_string(&v)?)?,
                _ => emit(env.out, format, &v)?,
            }
            env.out.flush()?;
        }
        last_frame = Some(frame);
        if !a.watch {
            return Ok(OK);
        }
        if view::is_final(v.phase) && v.up_to_date {
            return Ok(if v.phase == Some(vigil_crds::rollout::RolloutPhase::Completed) { OK } else { ENDED_BADLY });
        }
        if a.timeout.is_some_and(|t| started.elapsed() + a.interval > t) {
            return Err(Failure {
                code: TIMED_OUT,
                message: format!(
                    "{rns}/{rname} did not complete, roll back or fail within {:?}",
                    a.timeout.unwrap_or_default()
                ),
            });
        }
        tokio::time::sleep(a.interval).await;
        rollout = clean(api.get(&rname).await?)?;
    }
}

async fn change(env: &mut Env<'_>, ns: Option<&str>, a: &ActArgs, c: Change, format: Output) -> Result<i32, Failure> {
    let r = find_rollout_as_stored(env, ns, a.rollout.as_deref()).await?;
    change_on(env, r, a, c, format).await
}

/// What a change printed, for `-o json|yaml`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChangeReport {
    rollout: String,
    field_manager: &'static str,
    says: String,
    written: bool,
    action_id: Option<String>,
    apply: Option<serde_json::Value>,
    phase: Option<String>,
    reason: Option<String>,
}

async fn change_on(env: &mut Env<'_>, r: AgentRollout, a: &ActArgs, c: Change, format: Output) -> Result<i32, Failure> {
    let ChangeArgs { dry_run, force, wait } = a.change.clone();
    let (rns, rname) = (r.namespace().unwrap_or_default(), r.name_any());
    let api: Api<AgentRollout> = Api::namespaced(env.client.clone(), &rns);
    let mut report = ChangeReport {
        rollout: format!("{rns}/{rname}"),
        field_manager: c.manager(),
        says: String::new(),
        written: false,
        action_id: None,
        apply: None,
        phase: None,
        reason: None,
    };
    // A pin another manager wrote can be taken away only by force: a JSON patch, guarded by a
    // test that the list item is still that pin.
    let planned = match (&c, force) {
        (Change::Unpin(group), true)
            if !r.status.as_ref().is_some_and(|s| s.pinned_groups.iter().any(|g| &g.name == group)) =>
        {
            let Some(i) = r.spec.pins.iter().position(|p| &p.name == group) else {
                return Err(fail(format!("{rns}/{rname} has no pin {group}")));
            };
            let ops = serde_json::json!([
                {"op": "test", "path": format!("/spec/pins/{i}/name"), "value": group},
                {"op": "remove", "path": format!("/spec/pins/{i}")}
            ]);
            let says = format!(
                "{rns}/{rname} unpins {group} (taken away from its field manager): its nodes rejoin the rollout"
            );
            report.says.clone_from(&says);
            if format == Output::Text {
                say(env.out, &says)?;
            }
            if dry_run {
                report.apply = Some(ops);
                emit(env.out, format, &report)?;
                return Ok(OK);
            }
            let p: Patch<()> = Patch::Json(serde_json::from_value(ops)?);
            let done = clean(api.patch(&rname, &PatchParams::default(), &p).await?)?;
            report.written = true;
            return finish(env, &api, done, None, wait, report, format).await;
        }
        _ => actions::plan(&c, &r, (env.clock)()).map_err(fail)?,
    };
    report.says.clone_from(&planned.says);
    report.action_id.clone_from(&planned.action_id);
    report.apply.clone_from(&planned.apply);
    if format == Output::Text {
        say(env.out, &planned.says)?;
    }
    let Some(body) = planned.apply else {
        emit(env.out, format, &report)?;
        return Ok(OK);
    };
    if dry_run {
        if format == Output::Text {
            say(
                env.out,
                &format!(
                    "dry run: nothing written; the server-side apply (field manager {}) would be:\n{}",
                    c.manager(),
                    serde_yaml::to_string(&body)?
                ),
            )?;
        }
        emit(env.out, format, &report)?;
        return Ok(OK);
    }
    let mut pp = PatchParams::apply(c.manager());
    if force {
        pp = pp.force();
    }
    let done = match api.patch(&rname, &pp, &Patch::Apply(&body)).await {
        Ok(done) => clean(done)?,
        Err(kube::Error::Api(e)) if e.code == 409 => {
            return Err(fail(format!(
                "{}\n  Another field manager (a GitOps tool, kubectl apply) owns this field: change it where it is written, or run again with --force to take it over.",
                e.message
            )));
        }
        Err(e) => return Err(e.into()),
    };
    report.written = true;
    finish(env, &api, done, planned.action_id, wait, report, format).await
}

/// Waits (up to `wait`) for the operator to take the change up, then says where the rollout
/// stands.
async fn finish(
    env: &mut Env<'_>,
    api: &Api<AgentRollout>,
    written: AgentRollout,
    action_id: Option<String>,
    wait: Duration,
    mut report: ChangeReport,
    format: Output,
) -> Result<i32, Failure> {
    let name = written.name_any();
    let generation = written.metadata.generation;
    let taken_up = |r: &AgentRollout| {
        let st = r.status.as_ref();
        match &action_id {
            Some(id) => {
                st.and_then(|s| s.handled_action.as_ref()) == Some(id)
                    || st.and_then(|s| s.reason.as_ref()).is_some_and(|why| why.contains(id.as_str()))
            }
            None => {
                st.and_then(|s| s.observed_generation).is_some() && st.and_then(|s| s.observed_generation) >= generation
            }
        }
    };
    let mut now = written;
    let deadline = tokio::time::Instant::now() + wait;
    let mut code = OK;
    if !wait.is_zero() {
        while !taken_up(&now) {
            if tokio::time::Instant::now() >= deadline {
                code = TIMED_OUT;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500).min(wait)).await;
            now = clean(api.get(&name).await?)?;
        }
    }
    let st = now.status.clone().unwrap_or_default();
    report.phase = st.phase.map(|p| format!("{p:?}"));
    report.reason.clone_from(&st.reason);
    let refused = action_id.as_ref().is_some_and(|id| {
        st.handled_action.as_ref() != Some(id) && st.reason.as_ref().is_some_and(|why| why.contains(id.as_str()))
    });
    if format == Output::Text {
        if wait.is_zero() {
            writeln!(env.out, "written; the operator carries it out at its next step")?;
        } else if code == TIMED_OUT {
            writeln!(
                env.out,
                "written, but the operator did not take it up within {}: is it running? (kubectl get pods -A -l app.kubernetes.io/name=vigil-operator)",
                render::human(i64::try_from(wait.as_secs()).unwrap_or(i64::MAX))
            )?;
        } else {
            writeln!(
                env.out,
                "operator: {} — {}",
                report.phase.as_deref().unwrap_or("Pending"),
                report.reason.as_deref().unwrap_or("")
            )?;
        }
    }
    emit(env.out, format, &report)?;
    if refused {
        return Err(fail(format!("the operator refused the request: {}", st.reason.unwrap_or_default())));
    }
    Ok(code)
}

async fn agents(env: &mut Env<'_>, a: &crate::cli::AgentsArgs, format: Output) -> Result<i32, Failure> {
    let filter = crate::agents::Filter {
        revision: a.revision.clone(),
        health: a.health.as_deref().map(crate::agents::parse_health).transpose().map_err(fail)?,
        stale: a.stale,
    };
    let all = clean_all(Api::<AgentStatus>::all(env.client.clone()).list(&ListParams::default()).await?.items)?;
    let now = (env.clock)();
    let rows = crate::agents::rows(&all, &filter, now);
    if format != Output::Text {
        emit(env.out, format, &rows)?;
        return Ok(OK);
    }
    if rows.is_empty() {
        writeln!(env.out, "no agents match ({} AgentStatus object(s) in the cluster)", all.len())?;
        return Ok(OK);
    }
    let p = env.paint;
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.node.clone(),
                r.version.clone().unwrap_or_default(),
                r.revision.clone().unwrap_or_default(),
                format!("{:?}", r.health),
                r.reporting.clone().unwrap_or_else(|| "-".into()),
                r.last_report.map_or_else(|| "never".into(), |t| render::relative(t, now)),
                r.active_alerts.to_string(),
                r.sources.clone().unwrap_or_default(),
                r.health_reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let text = render::table(
        &["NODE", "VERSION", "REVISION", "HEALTH", "REPORTING", "LAST REPORT", "ALERTS", "SOURCES", "WHY"],
        &table,
    );
    // Colour after alignment, so escapes do not count as width.
    let text = if p.on {
        text.lines()
            .map(|l| {
                let mut l = l.to_owned();
                for w in ["Healthy", "Degraded", "Unhealthy", "Unknown"] {
                    l = l.replacen(&format!(" {w} "), &format!(" {} ", p.state(w)), 1);
                }
                l + "\n"
            })
            .collect()
    } else {
        text
    };
    write!(env.out, "{text}")?;
    writeln!(env.out, "{}", crate::agents::summary(&rows))?;
    Ok(OK)
}

async fn why(env: &mut Env<'_>, node: &str, format: Output) -> Result<i32, Failure> {
    let cluster = Cluster::read(&env.client, None).await?;
    let Some(n) = cluster.nodes.iter().find(|n| n.name == node) else {
        return Err(fail(format!("no node {node}")));
    };
    let rollouts = clean_all(Api::<AgentRollout>::all(env.client.clone()).list(&ListParams::default()).await?.items)?;
    let status = cluster.statuses.iter().find(|s| s.name_any() == node);
    let pods: Vec<&PodFacts> = cluster.pods.iter().filter(|p| p.node.as_deref() == Some(node)).collect();
    let lease = cluster.leases.iter().find(|l| l.name == agent::lease_name(node));
    let facts = cluster.status_facts.iter().find(|s| s.name == node);
    let me = observe::node_view(n, &pods, lease, facts);
    let now = (env.clock)();
    let v = crate::why::why(&me, &rollouts, |r| cluster.fleet(r), now);
    if format != Output::Text {
        emit(env.out, format, &v)?;
        return Ok(OK);
    }
    let p = env.paint;
    writeln!(env.out, "{}", p.bold(&v.node))?;
    writeln!(env.out, "  rollout   {}", v.rollout.as_deref().unwrap_or("none"))?;
    writeln!(env.out, "  revision  {}", v.revision.as_deref().unwrap_or("none (no vigil.dev/revision label)"))?;
    if v.running.len() > 1 || v.running.first() != v.revision.as_ref() {
        writeln!(
            env.out,
            "  running   {}",
            if v.running.is_empty() { "no agent".to_owned() } else { v.running.join(", ") }
        )?;
    }
    if let Some(s) = status.and_then(|s| s.status.as_ref()) {
        let last = s.last_report_time.as_ref().map_or_else(|| "never".into(), |t| render::relative(t.0, now));
        writeln!(
            env.out,
            "  agent     {} on {}, {}, last report {last}",
            s.agent_version.as_deref().unwrap_or("?"),
            s.revision.as_deref().unwrap_or("?"),
            p.state(&format!("{:?}", s.health))
        )?;
    }
    for (i, b) in v.because.iter().enumerate() {
        writeln!(env.out, "  {}  {b}", if i == 0 { "because" } else { "       " })?;
    }
    Ok(OK)
}

/// Reads what an uninstall left, plans with [`crate::cleanup::plan`] and removes it (unless
/// `--dry-run`). A removal that finds its object gone counts as done.
async fn cleanup(env: &mut Env<'_>, ns: &str, a: &crate::cli::CleanupArgs, format: Output) -> Result<i32, Failure> {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    use crate::cleanup::{Facts, NodeFacts, Removal};
    let c = &env.client;
    let agents = ListParams::default().labels(agent::SELECTOR);
    // With the CRDs deleted too there are no such objects, and the nodes still get cleaned.
    let rollouts: Vec<(String, String)> = absent_is_empty(
        Api::<AgentRollout>::all(c.clone()).list_metadata(&ListParams::default()).await.map(|l| l.items),
    )?
    .into_iter()
    .filter_map(|o| Some((o.metadata.namespace?, o.metadata.name?)))
    .collect();
    let rollouts_here: Vec<String> = rollouts.iter().filter(|(n, _)| n == ns).map(|(_, r)| r.clone()).collect();
    let live_rollouts = rollouts.iter().map(|(n, r)| vigil_crds::labels::rollout_label_value(n, r)).collect();
    // Every agent pod, of every install: which nodes run one, and whether this namespace still has any.
    let agent_pods = Api::<Pod>::all(c.clone()).list(&agents).await?.items;
    let pods_here: Vec<String> = agent_pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let nodes_with_agents = agent_pods.into_iter().filter_map(|p| p.spec?.node_name).collect();
    let daemonsets_here = names(Api::<DaemonSet>::namespaced(c.clone(), ns).list_metadata(&agents).await?.items);
    let operators = ListParams::default().labels(vigil_crds::labels::OPERATOR_SELECTOR);
    let operators_here = names(Api::<Pod>::namespaced(c.clone(), ns).list_metadata(&operators).await?.items);
    let node_api: Api<Node> = Api::all(c.clone());
    let nodes: Vec<NodeFacts> = node_api
        .list(&ListParams::default().labels(&a.nodes))
        .await
        .map_err(|e| fail(format!("--nodes {:?}: {e}", a.nodes)))?
        .items
        .into_iter()
        .map(|n| NodeFacts {
            conditions: agent_conditions(&n),
            name: n.metadata.name.unwrap_or_default(),
            labels: n.metadata.labels.unwrap_or_default(),
            annotations: n.metadata.annotations.unwrap_or_default().into_keys().collect(),
        })
        .collect();
    let leases_api: Api<Lease> = Api::namespaced(c.clone(), ns);
    let mut leases = names(leases_api.list_metadata(&agents).await?.items);
    leases.retain(|n| agent::lease_node(n).is_some());
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
    let mut config_maps = Vec::new();
    for name in [vigil_crds::labels::LEADER_RECORD, vigil_crds::policy::POLICIES_CONFIGMAP] {
        if cms.get_metadata_opt(name).await?.is_some() {
            config_maps.push(name.to_owned());
        }
    }
    config_maps.extend(names(cms.list_metadata(&ListParams::default().labels(agent::SNAPSHOT_SELECTOR)).await?.items));
    let secrets_api: Api<Secret> = Api::namespaced(c.clone(), ns);
    let secrets = match secrets_api.get_metadata_opt(vigil_crds::policy::SECRETS_SECRET).await? {
        Some(_) => vec![vigil_crds::policy::SECRETS_SECRET.to_owned()],
        None => Vec::new(),
    };
    let statuses_api: Api<AgentStatus> = Api::all(c.clone());
    let statuses = names(absent_is_empty(statuses_api.list_metadata(&ListParams::default()).await.map(|l| l.items))?)
        .into_iter()
        .collect();
    let facts = Facts {
        namespace: ns.to_owned(),
        rollouts_here,
        daemonsets_here,
        pods_here,
        operators_here,
        live_rollouts,
        nodes,
        nodes_with_agents,
        leases,
        config_maps,
        secrets,
        statuses,
    };
    let plan = crate::cleanup::plan(&facts).map_err(fail)?;
    if format != Output::Text {
        emit(env.out, format, &serde_json::json!({"dryRun": a.dry_run, "plan": plan}))?;
    }
    let mut failed = 0;
    for r in &plan.remove {
        let done = if a.dry_run {
            Ok(())
        } else {
            match r {
                Removal::Lease { name } => gone(leases_api.delete(name, &Default::default()).await),
                Removal::ConfigMap { name } => gone(cms.delete(name, &Default::default()).await),
                Removal::Secret { name } => gone(secrets_api.delete(name, &Default::default()).await),
                Removal::AgentStatus { name } => gone(statuses_api.delete(name, &Default::default()).await),
                Removal::NodeMetadata { node, labels, annotations } => {
                    let nulls = |keys: &[String]| -> serde_json::Map<String, serde_json::Value> {
                        keys.iter().map(|k| (k.clone(), serde_json::Value::Null)).collect()
                    };
                    let patch =
                        serde_json::json!({"metadata": {"labels": nulls(labels), "annotations": nulls(annotations)}});
                    gone(node_api.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await)
                }
                Removal::NodeConditions { node, types } => {
                    let deletes: Vec<serde_json::Value> =
                        types.iter().map(|t| serde_json::json!({"type": t, "$patch": "delete"})).collect();
                    let patch = serde_json::json!({"status": {"conditions": deletes}});
                    gone(node_api.patch_status(node, &PatchParams::default(), &Patch::Strategic(&patch)).await)
                }
            }
        };
        let shown = r.to_string();
        let what = vigil_crds::text::printable(&shown);
        match &done {
            Ok(()) if format != Output::Text => {}
            Ok(()) if a.dry_run => writeln!(env.out, "would remove {what}")?,
            Ok(()) => writeln!(env.out, "removed {what}")?,
            Err(e) => writeln!(env.err, "error: removing {what}: {e}")?,
        }
        failed += usize::from(done.is_err());
    }
    if format == Output::Text {
        for k in &plan.kept {
            writeln!(
                env.out,
                "kept node/{}: {}",
                vigil_crds::text::printable(&k.node),
                vigil_crds::text::printable(&k.why)
            )?;
        }
        if plan.remove.is_empty() {
            writeln!(env.out, "nothing of an install in namespace {ns} is left")?;
        }
    }
    Ok(if failed == 0 { OK } else { FAILED })
}

/// The names of listed objects.
fn names<K>(items: Vec<kube::core::PartialObjectMeta<K>>) -> Vec<String> {
    items.into_iter().filter_map(|o| o.metadata.name).collect()
}

/// A list of a resource whose CRD is gone: none.
fn absent_is_empty<T>(r: kube::Result<Vec<T>>) -> Result<Vec<T>, kube::Error> {
    match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Vec::new()),
        other => other,
    }
}

/// The condition types on `node` the agents own: those of [`agent::NODE_CONDITIONS`] whose
/// field the agent's field manager set (node-problem-detector uses some of the same names; its
/// conditions are not ours to remove).
pub fn agent_conditions(node: &Node) -> Vec<String> {
    let owned: std::collections::BTreeSet<String> = node
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(agent::NODE_CONDITIONS_MANAGER))
        .filter_map(|m| m.fields_v1.as_ref()?.0.get("f:status")?.get("f:conditions")?.as_object().cloned())
        .flat_map(|c| c.into_iter().map(|(k, _)| k))
        .filter_map(|k| {
            serde_json::from_str::<serde_json::Value>(k.strip_prefix("k:")?)
                .ok()?
                .get("type")?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let present = node.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten();
    present.map(|c| c.type_.clone()).filter(|t| owned.contains(t)).collect()
}

/// A write's result, where "not found" (removed meanwhile) is success.
fn gone<T>(r: kube::Result<T>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
