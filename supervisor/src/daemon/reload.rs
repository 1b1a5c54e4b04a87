//! `governor policy reload` and SIGHUP: the rules loaded again for every agent; the old ones
//! stay when the new ones are invalid.

use std::{collections::HashMap, rc::Rc};

use aya::maps::{MapData, RingBuf};

use crate::{engine, policy::RingSource, probes};

use super::Daemon;

impl<'w> Daemon<'w> {
    /// Loads the policy again and puts it in force for every agent, or keeps the old one.
    pub(super) fn reload(&mut self, ring: &mut RingBuf<MapData>) -> Result<usize, String> {
        let result = self.try_reload(ring);
        self.metrics.reload(result.is_ok());
        match &result {
            Ok(rules) => tracing::info!(rules, agents = self.agents.len(), "policy reloaded"),
            Err(error) => tracing::error!(error = %error, "policy reload refused; the policy in force stays"),
        }
        result
    }

    pub(super) fn try_reload(&mut self, ring: &mut RingBuf<MapData>) -> Result<usize, String> {
        let source = RingSource::locate(self.rings.as_deref());
        let (rules, engine) = engine::load(&source, &[]).map_err(|error| error.to_string())?;
        // Every agent's rules are built before any is put in force. An agent whose own
        // `--policy` files no longer load (removed, edited badly) keeps the rules it has.
        let mut own = HashMap::new();
        let mut kept = Vec::new();
        for (id, supervised) in &self.agents {
            match self.rules_for(&supervised.registration.overlays) {
                Ok(Some(own_policy)) => {
                    own.insert(*id, own_policy);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(agent = %supervised.output.agent_id, error = %error, "its --policy files do not load; it keeps the rules in force");
                    kept.push(*id);
                }
            }
        }
        let count = rules.rules.len();
        self.engine = Rc::new(engine);
        self.rules = rules;
        // Events decided until now were decided under the old rules.
        self.drain_events(ring);
        let ids: Vec<u64> = self.agents.keys().copied().collect();
        let by_inode = self.probes.backend == probes::Backend::Lsm;
        for id in ids.into_iter().filter(|id| !kept.contains(id)) {
            let (own_rules, own_engine) = own.remove(&id).unzip();
            let Some(supervised) = self.agents.get_mut(&id) else { continue };
            supervised.output.swap_engine(own_engine.map_or_else(|| Rc::clone(&self.engine), Rc::new));
            let denies =
                own_rules.as_ref().unwrap_or(&self.rules).kernel_denies(supervised.registration.trust, by_inode);
            supervised.own_rules = own_rules;
            if let Err(error) = self.probes.deny(id, &denies) {
                tracing::error!(agent = %supervised.output.agent_id, error = %error, "kernel deny rules not replaced");
            }
        }
        Ok(count)
    }
}
