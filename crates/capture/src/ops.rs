//! `install`, `remove` and `show` for the families asked for: read the current rules, compute
//! the restore input, and (unless it is a dry run) apply it. Every family's input is checked
//! with `iptables-restore --test` before any is applied, so a rule one family refuses does
//! not leave the other half-installed.

use crate::error::CaptureError;
use crate::family::Family;
use crate::iptables::Iptables;
use crate::options::Options;
use crate::plan::plan;
use crate::saved::Saved;
use crate::script;

/// What was (or, in a dry run, would be) fed to one family's iptables-restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub family: Family,
    /// `None`: nothing to do for this family (`remove` with nothing of ours installed).
    pub script: Option<String>,
    /// The current rules could not be read (a dry run without root): the script is for a
    /// namespace with nothing of ours in it.
    pub assumed_clean: bool,
}

/// The families to work on: both, or IPv4 alone when asked or when the kernel has no IPv6.
pub fn families(ipv4_only: bool) -> Vec<Family> {
    if ipv4_only || !crate::iptables::ipv6_available() {
        vec![Family::V4]
    } else {
        Family::BOTH.to_vec()
    }
}

/// Installs `opts` in place of anything of ours (idempotent).
pub fn install(
    ipt: &Iptables,
    opts: &Options,
    families: &[Family],
    dry_run: bool,
) -> Result<Vec<Step>, CaptureError> {
    opts.validate().map_err(CaptureError::Invalid)?;
    let mut steps = Vec::new();
    for &family in families {
        let (current, assumed_clean) = match ipt.save(family) {
            Ok(text) => (Saved::parse(&text), false),
            Err(CaptureError::NotPermitted { .. } | CaptureError::Missing { .. }) if dry_run => {
                (Saved::default(), true)
            }
            Err(e) => return Err(e),
        };
        steps.push(Step {
            family,
            script: Some(script::install(&plan(opts, family), &current)),
            assumed_clean,
        });
    }
    if !dry_run {
        apply(ipt, &steps)?;
    }
    Ok(steps)
}

/// Removes every chain and rule of ours, and nothing else.
pub fn remove(
    ipt: &Iptables,
    families: &[Family],
    dry_run: bool,
) -> Result<Vec<Step>, CaptureError> {
    let mut steps = Vec::new();
    for &family in families {
        let current = Saved::parse(&ipt.save(family)?);
        steps.push(Step {
            family,
            script: script::remove(&current),
            assumed_clean: false,
        });
    }
    if !dry_run {
        apply(ipt, &steps)?;
    }
    Ok(steps)
}

/// Our rules per family, as iptables-save shows them (empty text: none installed).
pub fn show(ipt: &Iptables, families: &[Family]) -> Result<Vec<(Family, String)>, CaptureError> {
    families
        .iter()
        .map(|&f| Ok((f, script::show(&Saved::parse(&ipt.save(f)?)))))
        .collect()
}

fn apply(ipt: &Iptables, steps: &[Step]) -> Result<(), CaptureError> {
    let todo: Vec<(Family, &str)> = steps
        .iter()
        .filter_map(|s| Some((s.family, s.script.as_deref()?)))
        .collect();
    for (family, text) in &todo {
        ipt.restore(*family, text, true)?;
    }
    let mut applied = None;
    for (family, text) in &todo {
        if let Err(e) = ipt.restore(*family, text, false) {
            return Err(match applied {
                Some(done) => CaptureError::Partial {
                    applied: done,
                    failed: *family,
                    source: Box::new(e),
                },
                None => e,
            });
        }
        applied = Some(*family);
    }
    Ok(())
}
