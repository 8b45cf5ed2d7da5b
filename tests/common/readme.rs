//! README.md's `console` blocks as tests run them: each `# COMMAND` and the
//! lines shown after it, a shell script that runs them in order with
//! markers around each, and the check of what each printed (exit 0, and
//! every line shown, in order; `…` stands for anything). Blocks after the
//! line `<!-- in the VM -->` need a kernel with ipvlan and 802.1q: they
//! run in scripts/vm (tests/vm.rs); blocks after `<!-- with Docker -->`
//! need a dockerd (tests/readme_docker.rs); the others run on this
//! machine alone (tests/readme.rs).

use std::fmt::Write;

/// One `# COMMAND` of a console block and the lines shown after it.
#[derive(Debug)]
pub struct Step {
    pub command: String,
    pub expected: Vec<String>,
}

/// Where a console block runs: the line before it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    Here,
    /// `<!-- in the VM -->`
    Vm,
    /// `<!-- with Docker -->`
    Docker,
}

impl Runner {
    fn marked_by(line: &str) -> Runner {
        match line.trim_end() {
            "<!-- in the VM -->" => Runner::Vm,
            "<!-- with Docker -->" => Runner::Docker,
            _ => Runner::Here,
        }
    }
}

/// The steps of the console blocks `runner` runs, in the README's order.
/// The tour makes its own host and leaves none (`unset PLUMB_HOST_NETNS`);
/// each block after it, and each of the other runners', starts with a
/// marker step (None) where the runner sets its defaults up.
pub fn steps(readme: &str, runner: Runner) -> Vec<Option<Step>> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut after_tour = false;
    let mut marked = Runner::Here;
    let mut skipping = false;
    for line in readme.lines() {
        if !in_block {
            if line.trim_end() == "```console" {
                skipping = marked != runner;
                in_block = true;
                if !skipping && (after_tour || runner != Runner::Here) {
                    out.push(None);
                }
            }
            marked = Runner::marked_by(line);
            continue;
        }
        if skipping {
            in_block = !line.starts_with("```");
            continue;
        }
        after_tour |= line.contains("unset PLUMB_HOST_NETNS");
        if line.starts_with("```") {
            in_block = false;
        } else if let Some(cmd) = line.strip_prefix("# ") {
            out.push(Some(Step {
                command: cmd.to_string(),
                expected: Vec::new(),
            }));
        } else if let Some(Some(step)) = out.last_mut() {
            // A command ending in `\` goes on on the next line.
            if step.command.ends_with('\\') && step.expected.is_empty() {
                step.command.push('\n');
                step.command.push_str(line);
            } else {
                step.expected.push(line.trim_end().to_string());
            }
        }
    }
    out
}

/// Whether `line` has the shape `pattern` shows (`…` matching anything).
pub fn shaped(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let mut rest = line;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part) && rest.len() >= part.len();
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    rest.is_empty()
}

/// A shell script of `steps`, each framed by markers, `defaults` where a
/// block starts a marker step.
pub fn script(steps: &[Option<Step>], defaults: &str) -> String {
    let mut script = String::from("exec 2>&1\n");
    for (i, step) in steps.iter().enumerate() {
        match step {
            None => script.push_str(defaults),
            Some(s) => {
                let _ = write!(
                    script,
                    "printf '\\n@@step {i}\\n'\n{}\nprintf '\\n@@exit {i} %d\\n' $?\n",
                    s.command
                );
                // A daemon started in the background is waited for, as
                // a person pasting would not notice doing.
                if s.command.starts_with("plumb daemon") {
                    script.push_str(
                        "for _ in $(seq 100); do plumb doctor 2>/dev/null | grep -q '\"daemon\": true' && break; sleep 0.1; done\n",
                    );
                }
            }
        }
    }
    script
}

/// Every step ran, exited 0 and showed its lines, in `text` (what the
/// script printed).
pub fn check(steps: &[Option<Step>], text: &str) {
    assert!(
        text.contains("@@step"),
        "the README's shell did not start:\n{text}"
    );
    for (i, step) in steps.iter().enumerate() {
        let Some(step) = step else { continue };
        let start = format!("@@step {i}\n");
        let from = text
            .find(&start)
            .unwrap_or_else(|| panic!("`{}` never ran:\n{text}", step.command))
            + start.len();
        let end = text[from..]
            .find(&format!("@@exit {i} "))
            .unwrap_or_else(|| panic!("`{}` did not finish:\n{}", step.command, &text[from..]))
            + from;
        let output: Vec<&str> = text[from..end].lines().map(str::trim_end).collect();
        let status = text[end..]
            .lines()
            .next()
            .unwrap_or("")
            .rsplit(' ')
            .next()
            .unwrap_or("");
        assert_eq!(
            status,
            "0",
            "`{}` failed: {}",
            step.command,
            output.join("\n")
        );
        let mut lines = output.iter();
        for want in &step.expected {
            assert!(
                lines.any(|l| shaped(want, l)),
                "`{}` should show `{want}` (in order); it showed:\n{}",
                step.command,
                output.join("\n")
            );
        }
    }
}
