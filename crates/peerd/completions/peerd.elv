
use builtin;
use str;

set edit:completion:arg-completer[peerd] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'peerd'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'peerd'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand start 'Start the daemon (detached unless --foreground); returns once it is ready'
            cand stop 'Stop the daemon cleanly: goodbye to the peer, unregister, remove the socket'
            cand config 'Print the configuration `start` would use with these flags, and where each value comes from (flag, environment, config file, default)'
            cand install-service 'Write a systemd user unit that runs peerd (`~/.config/systemd/user/peerd.service`) and print the line that enables it'
            cand completions 'Print the script that gives SHELL completion of peerd''s commands and flags, e.g. `source <(peerd completions bash)` in ~/.bashrc'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'peerd;start'= {
            cand --config 'The config file [default: $XDG_CONFIG_HOME/peerchat/config.toml]'
            cand --name 'Your name: 1-32 ASCII letters, digits, ''_'', ''-'', ''.'', starting with a letter or digit. [default: your login name]'
            cand --directory 'The directory''s URL, or the URLs of its replicas separated by commas: peerd uses the first that answers and moves to the next when it stops answering. [default: http://127.0.0.1:7300]'
            cand --directory-key 'For an https:// directory: the fingerprint its key must have (`directoryd key` prints it). Without it the key seen first is trusted and remembered'
            cand --listen 'Where to listen for peers. [default: 0.0.0.0:0]'
            cand --advertise 'The address other peers dial. Default: the listening port on the IP address the directory sees us coming from'
            cand --socket 'The control socket chatctl talks to. Default: $XDG_RUNTIME_DIR/peerchat/peerd.sock, or /tmp/peerchat-$UID/peerd.sock'
            cand --data-dir 'Conversation history and other state. Default: <user data dir>/peerchat/<name>'
            cand --resume-window 'How long a lost link may take to come back (the dialer redials with backoff) before the conversation ends and unacknowledged messages fail. [default: 30]'
            cand --accept 'Who may open a conversation without asking you: `all` (anyone the directory verified), `known` (peers you have talked to before; you are asked about the rest), or `ask` (you are asked about everyone: `chatctl accept` / `chatctl reject`). [default: all]'
            cand --foreground 'Stay attached and log to stderr (for systemd, containers and tests)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'peerd;stop'= {
            cand --socket 'The control socket of the daemon to stop [default: as `start`''s, from the config file or the default location]'
            cand --config 'The config file, for its `socket`'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'peerd;config'= {
            cand --config 'The config file [default: $XDG_CONFIG_HOME/peerchat/config.toml]'
            cand --name 'Your name: 1-32 ASCII letters, digits, ''_'', ''-'', ''.'', starting with a letter or digit. [default: your login name]'
            cand --directory 'The directory''s URL, or the URLs of its replicas separated by commas: peerd uses the first that answers and moves to the next when it stops answering. [default: http://127.0.0.1:7300]'
            cand --directory-key 'For an https:// directory: the fingerprint its key must have (`directoryd key` prints it). Without it the key seen first is trusted and remembered'
            cand --listen 'Where to listen for peers. [default: 0.0.0.0:0]'
            cand --advertise 'The address other peers dial. Default: the listening port on the IP address the directory sees us coming from'
            cand --socket 'The control socket chatctl talks to. Default: $XDG_RUNTIME_DIR/peerchat/peerd.sock, or /tmp/peerchat-$UID/peerd.sock'
            cand --data-dir 'Conversation history and other state. Default: <user data dir>/peerchat/<name>'
            cand --resume-window 'How long a lost link may take to come back (the dialer redials with backoff) before the conversation ends and unacknowledged messages fail. [default: 30]'
            cand --accept 'Who may open a conversation without asking you: `all` (anyone the directory verified), `known` (peers you have talked to before; you are asked about the rest), or `ask` (you are asked about everyone: `chatctl accept` / `chatctl reject`). [default: all]'
            cand --json 'Print one JSON object instead of aligned lines'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'peerd;install-service'= {
            cand --config 'The config file the service reads [default: the usual one]'
            cand --print 'Print the unit instead of writing it'
            cand --json 'Print one JSON object (`{"path", "written", "enable"}`, and `unit` with --print) instead of text'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'peerd;completions'= {
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'peerd;help'= {
            cand start 'Start the daemon (detached unless --foreground); returns once it is ready'
            cand stop 'Stop the daemon cleanly: goodbye to the peer, unregister, remove the socket'
            cand config 'Print the configuration `start` would use with these flags, and where each value comes from (flag, environment, config file, default)'
            cand install-service 'Write a systemd user unit that runs peerd (`~/.config/systemd/user/peerd.service`) and print the line that enables it'
            cand completions 'Print the script that gives SHELL completion of peerd''s commands and flags, e.g. `source <(peerd completions bash)` in ~/.bashrc'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'peerd;help;start'= {
        }
        &'peerd;help;stop'= {
        }
        &'peerd;help;config'= {
        }
        &'peerd;help;install-service'= {
        }
        &'peerd;help;completions'= {
        }
        &'peerd;help;help'= {
        }
    ]
    $completions[$command]
}
