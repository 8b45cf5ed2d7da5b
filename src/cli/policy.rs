use clap::{Args, Subcommand};
use clap_complete::engine::ArgValueCandidates;
use serde_json::json;

use super::daemon::ClusterArgs;
use super::print_json;
use crate::cluster_rules::ClusterView;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::policy::rules::{PolicySpec, StoredPolicy};

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Add a rule: SCOPE allow|deny [from SELECTOR] [to SELECTOR]
    /// [proto tcp|udp|icmp] [port N[-M]] [priority N].
    ///
    /// SCOPE is a bridge network or a tenant. A SELECTOR is a network, a
    /// tenant (`tenant:NAME`), a CIDR or address, `any`, `attachment:TARGET`
    /// or `label:KEY=VALUE`. Rules run by ascending priority (default 100),
    /// denies before allows at equal priority, then oldest first; the first
    /// that matches decides.
    Add(AddArgs),
    /// List the rules in evaluation order (with --cluster-store, the
    /// cluster's, oldest first).
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Remove rules by id (all or none); with --cluster-store, the
    /// cluster's.
    Rm {
        #[arg(required = true, add = ArgValueCandidates::new(super::complete::policies))]
        ids: Vec<i64>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Args, Debug)]
pub struct AddArgs {
    pub scope: String,
    #[arg(value_name = "allow|deny")]
    pub action: String,
    /// from SELECTOR, to SELECTOR, proto P, port N[-M], priority N.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "WORD VALUE"
    )]
    pub words: Vec<String>,
    #[arg(long)]
    pub priority: Option<u32>,
    /// Add the rule to the cluster in this etcd instead: every host's
    /// daemon applies it, to its containers and the other hosts'.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn run(engine: &mut Engine, cmd: PolicyCommand) -> Result<()> {
    match cmd {
        PolicyCommand::Add(mut args) => {
            cluster_options_after_words(&mut args)?;
            add(engine, args)?;
        }
        PolicyCommand::Ls { json, cluster } if cluster.cluster_store.is_some() => {
            let store = cluster.store()?.expect("a cluster store was given");
            let rules = store.call(async |client| store.policies(client).await)?;
            if json {
                print_json(&serde_json::to_value(&rules).unwrap_or_default());
            } else {
                for (id, spec) in &rules {
                    outln!("{id:>8}  {}", crate::cluster::spec_words(spec));
                }
            }
        }
        PolicyCommand::Rm { ids, cluster } if cluster.cluster_store.is_some() => {
            let store = cluster.store()?.expect("a cluster store was given");
            store.call(async |client| store.remove_policies(client, &ids).await)?;
            let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
            outln!(
                "removed rule(s) {} from cluster {}",
                ids.join(", "),
                store.name
            );
        }
        PolicyCommand::Ls { json, .. } => {
            let mut rules = engine.policies()?;
            rules.sort_by_key(|p| p.policy.order(p.id));
            if json {
                print_json(&rules.iter().map(listed).collect::<Vec<_>>().into());
            } else {
                for p in &rules {
                    outln!("{:>5}  {}", p.id, p.policy);
                }
            }
        }
        PolicyCommand::Rm { ids, .. } => {
            engine.policy_rm(&ids)?;
            let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
            outln!("removed rule(s) {}", ids.join(", "));
        }
    }
    Ok(())
}

fn listed(p: &StoredPolicy) -> serde_json::Value {
    json!({
        "Id": p.id,
        "Rule": p.policy.to_string(),
        "Scope": p.policy.scope,
        "Action": p.policy.action,
        "From": p.policy.from,
        "To": p.policy.to,
        "Proto": p.policy.proto,
        "Ports": p.policy.ports,
        "Priority": p.policy.priority,
        "Owner": p.owner,
    })
}

/// Add a rule here, or with --cluster-store to the cluster.
fn add(engine: &mut Engine, args: AddArgs) -> Result<()> {
    let store = args.cluster.store()?;
    let spec = spec_from_words(args)?;
    let Some(store) = store else {
        let p = engine.policy_add(&spec, None)?;
        outln!("rule {} added: {}", p.id, p.policy);
        return Ok(());
    };
    let (id, policy) = store.call(async |client| {
        let policy = ClusterView::read(&store, client, &[]).await?.check(&spec)?;
        Ok((store.add_policy(client, &spec).await?, policy))
    })?;
    outln!(
        "rule {id} added to cluster {}: {policy} (every host's daemon applies it)",
        store.name
    );
    Ok(())
}

/// `--cluster-*` options written after the rule's words (where clap
/// leaves them among the words) taken out of them.
fn cluster_options_after_words(args: &mut AddArgs) -> Result<()> {
    let mut words = Vec::new();
    let mut options = Vec::new();
    let mut given = std::mem::take(&mut args.words).into_iter();
    while let Some(word) = given.next() {
        if !word.starts_with("--cluster-") {
            words.push(word);
            continue;
        }
        let with_value = !word.contains('=');
        options.push(word);
        if with_value && let Some(value) = given.next() {
            options.push(value);
        }
    }
    args.words = words;
    if options.is_empty() {
        return Ok(());
    }
    let parser = <ClusterArgs as clap::Args>::augment_args(
        clap::Command::new("policy add").no_binary_name(true),
    );
    let matches = parser
        .try_get_matches_from(&options)
        .map_err(|e| Error::invalid("policy", options.join(" "), e.kind().to_string()))?;
    args.cluster = <ClusterArgs as clap::FromArgMatches>::from_arg_matches(&matches)
        .map_err(|e| Error::invalid("policy", options.join(" "), e.to_string()))?;
    Ok(())
}

/// `from X to Y proto P port N priority N`, in any order, each at most once.
fn spec_from_words(args: AddArgs) -> Result<PolicySpec> {
    let mut spec = PolicySpec {
        scope: args.scope,
        action: args.action,
        priority: args.priority,
        ..Default::default()
    };
    let mut words = args.words.into_iter();
    while let Some(word) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| Error::invalid("policy", &word, "needs a value after it"))?;
        let slot = match word.as_str() {
            "from" => &mut spec.from,
            "to" => &mut spec.to,
            "proto" => &mut spec.proto,
            "port" => &mut spec.port,
            // After the words, clap hands `--priority` over as one of them.
            "priority" | "--priority" => {
                let n = value
                    .parse()
                    .map_err(|_| Error::invalid("policy priority", &value, "expected a number"))?;
                if spec.priority.replace(n).is_some() {
                    return Err(Error::invalid("policy priority", &value, "given twice"));
                }
                continue;
            }
            other => {
                return Err(Error::invalid(
                    "policy",
                    other,
                    "expected from, to, proto, port or priority",
                ));
            }
        };
        if slot.replace(value.clone()).is_some() {
            return Err(Error::invalid(
                format!("policy {word}"),
                value,
                "given twice",
            ));
        }
    }
    Ok(spec)
}
