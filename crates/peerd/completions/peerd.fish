# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_peerd_global_optspecs
    string join \n h/help V/version
end

function __fish_peerd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_peerd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_peerd_using_subcommand
    set -l cmd (__fish_peerd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c peerd -n "__fish_peerd_needs_command" -s h -l help -d 'Print help'
complete -c peerd -n "__fish_peerd_needs_command" -s V -l version -d 'Print version'
complete -c peerd -n "__fish_peerd_needs_command" -f -a "start" -d 'Start the daemon (detached unless --foreground); returns once it is ready'
complete -c peerd -n "__fish_peerd_needs_command" -f -a "stop" -d 'Stop the daemon cleanly: goodbye to the peer, unregister, remove the socket'
complete -c peerd -n "__fish_peerd_needs_command" -f -a "config" -d 'Print the configuration `start` would use with these flags, and where each value comes from (flag, environment, config file, default)'
complete -c peerd -n "__fish_peerd_needs_command" -f -a "install-service" -d 'Write a systemd user unit that runs peerd (`~/.config/systemd/user/peerd.service`) and print the line that enables it'
complete -c peerd -n "__fish_peerd_needs_command" -f -a "completions" -d 'Print the script that gives SHELL completion of peerd\'s commands and flags, e.g. `source <(peerd completions bash)` in ~/.bashrc'
complete -c peerd -n "__fish_peerd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c peerd -n "__fish_peerd_using_subcommand start" -l config -d 'The config file [default: $XDG_CONFIG_HOME/peerchat/config.toml]' -r -F
complete -c peerd -n "__fish_peerd_using_subcommand start" -l name -d 'Your name: 1-32 ASCII letters, digits, \'_\', \'-\', \'.\', starting with a letter or digit. [default: your login name]' -r
complete -c peerd -n "__fish_peerd_using_subcommand start" -l directory -d 'The directory\'s URL, or the URLs of its replicas separated by commas: peerd uses the first that answers and moves to the next when it stops answering. [default: http://127.0.0.1:7300]' -r
complete -c peerd -n "__fish_peerd_using_subcommand start" -l directory-key -d 'For an https:// directory: the fingerprint its key must have (`directoryd key` prints it). Without it the key seen first is trusted and remembered' -r
complete -c peerd -n "__fish_peerd_using_subcommand start" -l listen -d 'Where to listen for peers. [default: 0.0.0.0:0]' -r
complete -c peerd -n "__fish_peerd_using_subcommand start" -l advertise -d 'The address other peers dial. Default: the listening port on the IP address the directory sees us coming from' -r
complete -c peerd -n "__fish_peerd_using_subcommand start" -l socket -d 'The control socket chatctl talks to. Default: $XDG_RUNTIME_DIR/peerchat/peerd.sock, or /tmp/peerchat-$UID/peerd.sock' -r -F
complete -c peerd -n "__fish_peerd_using_subcommand start" -l data-dir -d 'Conversation history and other state. Default: <user data dir>/peerchat/<name>' -r -F
complete -c peerd -n "__fish_peerd_using_subcommand start" -l resume-window -d 'How long a lost link may take to come back (the dialer redials with backoff) before the conversation ends and unacknowledged messages fail. [default: 30]' -r
complete -c peerd -n "__fish_peerd_using_subcommand start" -l accept -d 'Who may open a conversation without asking you: `all` (anyone the directory verified), `known` (peers you have talked to before; you are asked about the rest), or `ask` (you are asked about everyone: `chatctl accept` / `chatctl reject`). [default: all]' -r -f -a "all\t'Everyone (the directory has verified who they are)'
known\t'Peers whose key we have talked to before (known-peers); the user is asked for the rest'
ask\t'The user is asked for everyone'"
complete -c peerd -n "__fish_peerd_using_subcommand start" -l foreground -d 'Stay attached and log to stderr (for systemd, containers and tests)'
complete -c peerd -n "__fish_peerd_using_subcommand start" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c peerd -n "__fish_peerd_using_subcommand stop" -l socket -d 'The control socket of the daemon to stop [default: as `start`\'s, from the config file or the default location]' -r -F
complete -c peerd -n "__fish_peerd_using_subcommand stop" -l config -d 'The config file, for its `socket`' -r -F
complete -c peerd -n "__fish_peerd_using_subcommand stop" -s h -l help -d 'Print help'
complete -c peerd -n "__fish_peerd_using_subcommand config" -l config -d 'The config file [default: $XDG_CONFIG_HOME/peerchat/config.toml]' -r -F
complete -c peerd -n "__fish_peerd_using_subcommand config" -l name -d 'Your name: 1-32 ASCII letters, digits, \'_\', \'-\', \'.\', starting with a letter or digit. [default: your login name]' -r
complete -c peerd -n "__fish_peerd_using_subcommand config" -l directory -d 'The directory\'s URL, or the URLs of its replicas separated by commas: peerd uses the first that answers and moves to the next when it stops answering. [default: http://127.0.0.1:7300]' -r
complete -c peerd -n "__fish_peerd_using_subcommand config" -l directory-key -d 'For an https:// directory: the fingerprint its key must have (`directoryd key` prints it). Without it the key seen first is trusted and remembered' -r
complete -c peerd -n "__fish_peerd_using_subcommand config" -l listen -d 'Where to listen for peers. [default: 0.0.0.0:0]' -r
complete -c peerd -n "__fish_peerd_using_subcommand config" -l advertise -d 'The address other peers dial. Default: the listening port on the IP address the directory sees us coming from' -r
complete -c peerd -n "__fish_peerd_using_subcommand config" -l socket -d 'The control socket chatctl talks to. Default: $XDG_RUNTIME_DIR/peerchat/peerd.sock, or /tmp/peerchat-$UID/peerd.sock' -r -F
complete -c peerd -n "__fish_peerd_using_subcommand config" -l data-dir -d 'Conversation history and other state. Default: <user data dir>/peerchat/<name>' -r -F
complete -c peerd -n "__fish_peerd_using_subcommand config" -l resume-window -d 'How long a lost link may take to come back (the dialer redials with backoff) before the conversation ends and unacknowledged messages fail. [default: 30]' -r
complete -c peerd -n "__fish_peerd_using_subcommand config" -l accept -d 'Who may open a conversation without asking you: `all` (anyone the directory verified), `known` (peers you have talked to before; you are asked about the rest), or `ask` (you are asked about everyone: `chatctl accept` / `chatctl reject`). [default: all]' -r -f -a "all\t'Everyone (the directory has verified who they are)'
known\t'Peers whose key we have talked to before (known-peers); the user is asked for the rest'
ask\t'The user is asked for everyone'"
complete -c peerd -n "__fish_peerd_using_subcommand config" -l json -d 'Print one JSON object instead of aligned lines'
complete -c peerd -n "__fish_peerd_using_subcommand config" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c peerd -n "__fish_peerd_using_subcommand install-service" -l config -d 'The config file the service reads [default: the usual one]' -r -F
complete -c peerd -n "__fish_peerd_using_subcommand install-service" -l print -d 'Print the unit instead of writing it'
complete -c peerd -n "__fish_peerd_using_subcommand install-service" -l json -d 'Print one JSON object (`{"path", "written", "enable"}`, and `unit` with --print) instead of text'
complete -c peerd -n "__fish_peerd_using_subcommand install-service" -s h -l help -d 'Print help'
complete -c peerd -n "__fish_peerd_using_subcommand completions" -s h -l help -d 'Print help'
complete -c peerd -n "__fish_peerd_using_subcommand help; and not __fish_seen_subcommand_from start stop config install-service completions help" -f -a "start" -d 'Start the daemon (detached unless --foreground); returns once it is ready'
complete -c peerd -n "__fish_peerd_using_subcommand help; and not __fish_seen_subcommand_from start stop config install-service completions help" -f -a "stop" -d 'Stop the daemon cleanly: goodbye to the peer, unregister, remove the socket'
complete -c peerd -n "__fish_peerd_using_subcommand help; and not __fish_seen_subcommand_from start stop config install-service completions help" -f -a "config" -d 'Print the configuration `start` would use with these flags, and where each value comes from (flag, environment, config file, default)'
complete -c peerd -n "__fish_peerd_using_subcommand help; and not __fish_seen_subcommand_from start stop config install-service completions help" -f -a "install-service" -d 'Write a systemd user unit that runs peerd (`~/.config/systemd/user/peerd.service`) and print the line that enables it'
complete -c peerd -n "__fish_peerd_using_subcommand help; and not __fish_seen_subcommand_from start stop config install-service completions help" -f -a "completions" -d 'Print the script that gives SHELL completion of peerd\'s commands and flags, e.g. `source <(peerd completions bash)` in ~/.bashrc'
complete -c peerd -n "__fish_peerd_using_subcommand help; and not __fish_seen_subcommand_from start stop config install-service completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
