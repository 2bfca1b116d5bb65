//! Backends: the programs or kernel interfaces that hold a namespace's NAT rules. Each is one
//! implementation of [`Backend`]; [`select`] is the one place that chooses among them, and
//! every command (apply, clean, status, verify, the CNI verbs) goes through it.

pub mod counts;
pub mod iptables;
pub mod netfilter;
pub mod nftables;
pub mod program;
pub mod show;

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use tracing::info;

pub use crate::backend_kind::{BackendChoice, BackendKind};
pub use counts::RuleCount;
pub use program::TimeBudget;

use crate::config::{Ipv6Mode, ProxyConfig};
use crate::error::{Error, Result};
use crate::explain::{Connection, Explanation, Provenance, explain, installed_ruleset};
use crate::ruleset::{Drift, Family, InstalledTable, PlanOptions, Ruleset};

/// What to do with each family, decided once from the configuration and the namespace, and
/// passed down: program a ruleset (the empty one removes ours), or leave the family alone.
#[derive(Debug, Clone)]
pub struct Desired {
    /// One entry per family, IPv4 first.
    pub families: Vec<(Family, FamilyPlan)>,
    /// How strictly IPv6 was asked for: with `auto`, a backend that finds the IPv6 table
    /// unusable may still skip it (and says why).
    pub ipv6: Ipv6Mode,
}

#[derive(Debug, Clone)]
pub enum FamilyPlan {
    Program(Ruleset),
    Skip(String),
}

impl Desired {
    /// The rulesets to program, in family order.
    pub fn rulesets(&self) -> impl Iterator<Item = &Ruleset> {
        self.families.iter().filter_map(|(_, plan)| match plan {
            FamilyPlan::Program(ruleset) => Some(ruleset),
            FamilyPlan::Skip(_) => None,
        })
    }

    pub fn ruleset(&self, family: Family) -> Option<&Ruleset> {
        self.rulesets().find(|r| r.family == family)
    }

    pub fn skipped(&self) -> impl Iterator<Item = (Family, &str)> {
        self.families
            .iter()
            .filter_map(|(family, plan)| match plan {
                FamilyPlan::Skip(why) => Some((*family, why.as_str())),
                FamilyPlan::Program(_) => None,
            })
    }

    /// Whether every programmed family is empty (clean, CNI DEL).
    pub fn is_nothing(&self) -> bool {
        self.rulesets().all(|r| *r == Ruleset::empty(r.family))
    }
}

/// What one backend holds in this namespace, per family it read: a snapshot.
#[derive(Debug, Clone)]
pub struct Installed {
    pub backend: BackendKind,
    pub families: Vec<(Family, InstalledTable)>,
    /// Families it did not read, and why.
    pub skipped: Vec<(Family, String)>,
    /// The backend's own reading, for its own [`Backend::drift`] (which then compares this
    /// snapshot, not a second read); nothing else looks inside.
    pub own: Option<OwnReading>,
}

impl Installed {
    /// A snapshot holding nothing of ours (no family read).
    pub fn nothing(backend: BackendKind) -> Self {
        Installed {
            backend,
            families: Vec::new(),
            skipped: Vec::new(),
            own: None,
        }
    }

    pub fn table(&self, family: Family) -> Option<&InstalledTable> {
        self.families
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, t)| t)
    }

    /// True when nothing of ours is installed in any family read.
    pub fn is_clean(&self) -> bool {
        self.families.iter().all(|(_, t)| t.is_clean())
    }
}

/// A backend's reading in its own form, opaque outside that backend (a trait object cannot
/// name each backend's snapshot type; this carries it through the engine untouched).
#[derive(Clone)]
pub struct OwnReading(Arc<dyn Any + Send + Sync>);

impl OwnReading {
    pub fn new<T: Any + Send + Sync>(reading: T) -> Self {
        OwnReading(Arc::new(reading))
    }

    /// The reading, when it is a `T` (the backend that made it asks).
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl fmt::Debug for OwnReading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnReading(..)")
    }
}

/// How far [`Backend::available`] looks.
#[derive(Debug, Clone, Copy)]
pub enum Availability<'a> {
    /// Its programs (or kernel interface) are there; nothing is run. Says nothing of
    /// whether the kernel accepts its rules.
    Installed,
    /// It could serve an apply here, found without reading or touching any rule (CNI
    /// STATUS runs in the runtime's namespace): its programs are there and run.
    Works(&'a TimeBudget),
}

/// What [`Backend::read`] reads.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// The families the plan covers, whatever they hold.
    Planned(&'a Desired),
    /// Whether rules of ours are there at all, found without creating anything: a clean
    /// snapshot when there are none, or the backend is not there to hold any (its programs
    /// or kernel interface missing). A read that fails is an error, never "none".
    Ours,
}

/// What [`Backend::remove`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Every rule of ours, in both families: the first step of clean.
    Rules,
    /// Our sets, once no backend's rules use them: the last step of clean.
    Sets,
}

/// What converging did (or, for a dry run, would do) in one family.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyChange {
    pub family: Family,
    /// What was sent, in the backend's own form, or `None` when the family was in sync.
    pub payload: Option<String>,
}

/// One message to a backend's program or kernel interface, in its own words.
#[derive(Debug, Clone, Serialize)]
pub struct Payload {
    /// What takes it (`ipset restore`): the dry run's `#` heading.
    pub to: String,
    pub text: String,
}

/// What `status --show` prints of one backend, in its own syntax.
#[derive(Debug, Clone, Default)]
pub struct Shown {
    /// Per family: its rules of ours (a backend holding each family apart).
    pub families: Vec<(Family, String)>,
    /// All of ours at once (a backend holding both families in one table), and the
    /// difference from the plan as `- installed` / `+ planned` lines; otherwise the
    /// difference is each family's drift.
    pub whole: Option<(String, Vec<String>)>,
}

/// What a backend would send to install a plan where nothing of ours is.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Sent first, outside the rules' transactions (as [`ConvergeReport::sent_first`]).
    pub first: Vec<Payload>,
    /// The rules, in the backend's own syntax.
    pub rules: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConvergeReport {
    pub backend: BackendKind,
    pub families: Vec<FamilyChange>,
    /// Families left alone, and why.
    pub skipped: Vec<(Family, String)>,
    /// What was sent (dry run: would be sent) before the families' transactions, outside
    /// them, in the backend's own form (what the rules then use; the iptables backends send
    /// new ipsets this way, the native one has nothing to send apart).
    pub sent_first: Vec<Payload>,
    /// Other backends whose rules of ours this converge replaced in its own transaction (the
    /// native backend moving from iptables-nft): what they keep outside their rules, such
    /// as ipsets, is for the engine to remove.
    pub replaced: Vec<BackendKind>,
}

/// One way of holding the NAT rules. Implementations live in their own module and are added
/// to [`select`] and [`all`]; nothing else needs to know them. The verbs: is it here
/// ([`available`](Backend::available)), read a snapshot, the drift between a snapshot and
/// the plan, converge to the plan, remove ours; and its own text: of a plan, of a dry run,
/// and for status, of what it holds and its counters; and for `explain --live`, what the
/// rules it holds decide.
pub trait Backend: fmt::Debug + Send + Sync {
    fn kind(&self) -> BackendKind;

    /// How rulesets are planned for it (the limits of its matches, when to use sets): each
    /// backend says its own; there is no default.
    fn plan_options(&self) -> PlanOptions;

    /// Whether it is here, as far as `check` looks; `Err(BackendNotInstalled)` (or what
    /// failed) otherwise.
    fn available(&self, check: Availability<'_>) -> Result<()>;

    /// A snapshot of what it holds: the planned families, or only whether ours are there.
    fn read(&self, scope: Scope<'_>, budget: &TimeBudget) -> Result<Installed>;

    /// Brings the namespace to `desired`, atomically per transaction it sends; with
    /// `dry_run`, computes what it would send and sends nothing.
    fn converge(
        &self,
        desired: &Desired,
        budget: &TimeBudget,
        dry_run: bool,
    ) -> Result<ConvergeReport>;

    /// What it would send to install `desired` where nothing of ours is, in its own syntax
    /// (`iptables-restore` payloads and `ipset restore`, an nft script): what `render`
    /// prints. No I/O.
    fn render(&self, desired: &Desired) -> Rendered;

    /// What a dry run's `report` would send, in its own syntax with `#` comments around
    /// it: what `apply --dry-run` prints.
    fn dry_run_text(&self, report: &ConvergeReport) -> String;

    /// How the snapshot `installed` (read with [`Scope::Planned`]) differs from `desired`,
    /// in this backend's words; sets included.
    fn drift(
        &self,
        installed: &Installed,
        desired: &Desired,
        budget: &TimeBudget,
    ) -> Result<Vec<(Family, Drift)>>;

    /// How one family of the snapshot `installed` differs from a ruleset, in this backend's
    /// words (no I/O): the part of [`drift`](Backend::drift) verify asks per chain, and
    /// status of other backends' leftovers.
    fn describe_drift(&self, desired: &Ruleset, installed: &Installed, family: Family) -> Drift;

    /// Removes ours: the rules (in both families), or the sets no rule uses any more.
    fn remove(&self, what: Removal, budget: &TimeBudget) -> Result<()>;

    /// `status --show`: the rules of ours it holds for `desired`'s families, in its own
    /// syntax; the difference from the plan is computed only when not `in_sync`.
    fn show(&self, desired: &Desired, in_sync: bool, budget: &TimeBudget) -> Result<Shown>;

    /// `status --counters`: each planned rule of `desired` with its counters as installed.
    fn counters(&self, desired: &Desired, budget: &TimeBudget) -> Result<Vec<RuleCount>>;

    /// `explain --live` when the installed rules are not the plan: what the installed rules
    /// of `connection`'s family decide for it, and the rules of ours the walk could not
    /// follow (shapes meshinit never writes). By default the snapshot's typed rules are
    /// walked; a backend whose snapshot keeps rules in its own words reads them back itself.
    fn explain_installed(
        &self,
        config: &ProxyConfig,
        planned: &Ruleset,
        provenance: &Provenance<'_>,
        connection: &Connection,
        budget: &TimeBudget,
    ) -> Result<(Option<Explanation>, Vec<String>)> {
        let family = connection.family();
        let desired = Desired {
            families: vec![(family, FamilyPlan::Program(planned.clone()))],
            ipv6: Ipv6Mode::On,
        };
        let snapshot = self.read(Scope::Planned(&desired), budget)?;
        let table = snapshot.table(family).cloned().unwrap_or_default();
        let (walked, untyped) = installed_ruleset(&table, planned);
        Ok((
            Some(explain(config, Some(&walked), provenance, connection)),
            untyped,
        ))
    }
}

/// Every backend: the ones `clean` and `apply` walk to remove rules of ours wherever they
/// are (the kernel evaluates them all). `auto`'s preference is [`auto_select`]'s.
pub fn all() -> Vec<Box<dyn Backend>> {
    vec![
        Box::new(iptables::IptablesBackend::new(BackendKind::IptablesNft)),
        Box::new(iptables::IptablesBackend::new(BackendKind::IptablesLegacy)),
        Box::new(nftables::NftablesBackend),
    ]
}

/// The backend of `kind` (commands that print or count what a given backend installs).
pub fn by_kind(kind: BackendKind) -> Box<dyn Backend> {
    match kind {
        BackendKind::IptablesNft | BackendKind::IptablesLegacy => {
            Box::new(iptables::IptablesBackend::new(kind))
        }
        BackendKind::Nftables => Box::new(nftables::NftablesBackend),
    }
}

/// A chosen backend, why, and the one to fall back to if its kernel interface turns out
/// to be unusable on first use (only for `auto`).
#[derive(Debug)]
pub struct Selection {
    pub backend: Box<dyn Backend>,
    pub reason: String,
    pub fallback: Option<Box<dyn Backend>>,
}

/// Chooses the backend: the one asked for, or for `auto`, the one already holding rules
/// (a second backend would run beside the first), else the native one where nf_tables
/// works, with an installed iptables as fallback.
pub fn select(choice: BackendChoice, budget: &TimeBudget) -> Result<Selection> {
    let explicit = |kind| Selection {
        backend: by_kind(kind),
        reason: format!("--backend {kind}"),
        fallback: None,
    };
    let selection = match choice {
        BackendChoice::IptablesLegacy => explicit(BackendKind::IptablesLegacy),
        BackendChoice::IptablesNft => explicit(BackendKind::IptablesNft),
        BackendChoice::Nftables => explicit(BackendKind::Nftables),
        BackendChoice::Auto => auto_select(budget)?,
    };
    info!(backend = %selection.backend.kind(), reason = %selection.reason, "backend chosen");
    Ok(selection)
}

fn auto_select(budget: &TimeBudget) -> Result<Selection> {
    // meshinit's own table is kept first: it is there because a run chose the native
    // backend (by default, or `--backend nftables` on purpose), and another program's
    // legacy rules beside it are no reason to undo that choice. Moving is `--backend`.
    if nftables::native_table_exists() {
        return Ok(Selection {
            backend: by_kind(BackendKind::Nftables),
            reason: "table inet meshinit already holds meshinit's rules in this namespace".into(),
            fallback: None,
        });
    }
    // Legacy tables exist only where something created them; a backend holding rules is
    // kept, so that its rules are converged in place rather than duplicated.
    if iptables::legacy_holds_rules(budget) {
        return Ok(Selection {
            backend: by_kind(BackendKind::IptablesLegacy),
            reason: "iptables-legacy already holds rules in this namespace".into(),
            fallback: None,
        });
    }
    let iptables_nft = by_kind(BackendKind::IptablesNft);
    // Found over netlink, running no program. Without iptables-nft installed, the native
    // backend takes its rules over in its first transaction instead.
    if netfilter::iptables_nft_holds_ours()?
        && iptables_nft.available(Availability::Installed).is_ok()
    {
        info!(
            "iptables-nft holds meshinit's chains here: keeping it; `--backend nftables` \
             moves them to table inet meshinit in one transaction"
        );
        return Ok(Selection {
            backend: iptables_nft,
            reason: "iptables-nft already holds meshinit's chains in this namespace".into(),
            fallback: None,
        });
    }
    let native = by_kind(BackendKind::Nftables);
    let mut iptables = [iptables_nft, by_kind(BackendKind::IptablesLegacy)]
        .into_iter()
        .filter(|b| b.available(Availability::Installed).is_ok());
    match native.available(Availability::Works(budget)) {
        Ok(()) => Ok(Selection {
            backend: native,
            reason: "no backend holds our rules here and nf_tables works over netlink".into(),
            fallback: iptables.next(),
        }),
        // No nf_tables here (or not readable): an installed iptables is all that is left.
        Err(native_error) => match iptables.next() {
            Some(first) => Ok(Selection {
                reason: format!(
                    "nf_tables over netlink is not usable here ({native_error}); {} is installed",
                    first.kind()
                ),
                backend: first,
                fallback: iptables.next(),
            }),
            None => Err(native_error),
        },
    }
}

impl Selection {
    /// Runs `job` with the chosen backend; when the kernel refuses that backend on first use
    /// (nf_tables missing) and `auto` chose it, runs `job` again with the fallback.
    pub fn run<T>(&mut self, job: impl Fn(&dyn Backend) -> Result<T>) -> Result<T> {
        match job(self.backend.as_ref()) {
            Err(Error::BackendUnusable { backend, reason }) if self.fallback.is_some() => {
                let fallback = self.fallback.take().expect("checked above");
                tracing::warn!(%backend, %reason, "not usable here; falling back to {}", fallback.kind());
                self.backend = fallback;
                job(self.backend.as_ref())
            }
            other => other,
        }
    }
}
