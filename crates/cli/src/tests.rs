//! The command line as a whole: every flag explained, every subcommand listed, usage errors 64.

use clap::CommandFactory as _;

use super::Cli;

/// Every flag and subcommand under `cmd` without help text, as `podiam sub --flag`.
fn unexplained(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" || arg.is_hide_set() {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            let name = arg
                .get_long()
                .map_or_else(|| id.to_string(), |l| format!("--{l}"));
            out.push(format!("{path} {name}"));
        }
    }
    for sub in cmd.get_subcommands() {
        let here = format!("{path} {}", sub.get_name());
        if sub.get_name() == "help" {
            continue;
        }
        if sub.get_about().is_none() || sub.is_hide_set() {
            out.push(format!("{here} (subcommand without help, or hidden)"));
        }
        unexplained(sub, &here, out);
    }
}

#[test]
fn every_flag_and_subcommand_has_help_text() {
    let cmd = Cli::command();
    cmd.clone().debug_assert();
    let mut missing = Vec::new();
    unexplained(&cmd, "podiam", &mut missing);
    assert!(
        missing.is_empty(),
        "without help text:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn every_subcommand_is_listed_in_its_parents_help() {
    fn walk(cmd: &mut clap::Command, path: &str) {
        let help = cmd.render_help().to_string();
        let subs: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect();
        for name in &subs {
            assert!(
                help.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{name} ")) || l.trim() == name),
                "`{path} --help` does not list `{name}`:\n{help}"
            );
        }
        for sub in cmd.get_subcommands_mut() {
            let here = format!("{path} {}", sub.get_name());
            walk(sub, &here);
        }
    }
    walk(&mut Cli::command(), "podiam");
}
