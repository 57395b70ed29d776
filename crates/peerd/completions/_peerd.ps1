
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'peerd' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'peerd'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'peerd' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('start', 'start', [CompletionResultType]::ParameterValue, 'Start the daemon (detached unless --foreground); returns once it is ready')
            [CompletionResult]::new('stop', 'stop', [CompletionResultType]::ParameterValue, 'Stop the daemon cleanly: goodbye to the peer, unregister, remove the socket')
            [CompletionResult]::new('config', 'config', [CompletionResultType]::ParameterValue, 'Print the configuration `start` would use with these flags, and where each value comes from (flag, environment, config file, default)')
            [CompletionResult]::new('install-service', 'install-service', [CompletionResultType]::ParameterValue, 'Write a systemd user unit that runs peerd (`~/.config/systemd/user/peerd.service`) and print the line that enables it')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print the script that gives SHELL completion of peerd''s commands and flags, e.g. `source <(peerd completions bash)` in ~/.bashrc')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'peerd;start' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'The config file [default: $XDG_CONFIG_HOME/peerchat/config.toml]')
            [CompletionResult]::new('--name', '--name', [CompletionResultType]::ParameterName, 'Your name: 1-32 ASCII letters, digits, ''_'', ''-'', ''.'', starting with a letter or digit. [default: your login name]')
            [CompletionResult]::new('--directory', '--directory', [CompletionResultType]::ParameterName, 'The directory''s URL, or the URLs of its replicas separated by commas: peerd uses the first that answers and moves to the next when it stops answering. [default: http://127.0.0.1:7300]')
            [CompletionResult]::new('--directory-key', '--directory-key', [CompletionResultType]::ParameterName, 'For an https:// directory: the fingerprint its key must have (`directoryd key` prints it). Without it the key seen first is trusted and remembered')
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Where to listen for peers. [default: 0.0.0.0:0]')
            [CompletionResult]::new('--advertise', '--advertise', [CompletionResultType]::ParameterName, 'The address other peers dial. Default: the listening port on the IP address the directory sees us coming from')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The control socket chatctl talks to. Default: $XDG_RUNTIME_DIR/peerchat/peerd.sock, or /tmp/peerchat-$UID/peerd.sock')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Conversation history and other state. Default: <user data dir>/peerchat/<name>')
            [CompletionResult]::new('--resume-window', '--resume-window', [CompletionResultType]::ParameterName, 'How long a lost link may take to come back (the dialer redials with backoff) before the conversation ends and unacknowledged messages fail. [default: 30]')
            [CompletionResult]::new('--accept', '--accept', [CompletionResultType]::ParameterName, 'Who may open a conversation without asking you: `all` (anyone the directory verified), `known` (peers you have talked to before; you are asked about the rest), or `ask` (you are asked about everyone: `chatctl accept` / `chatctl reject`). [default: all]')
            [CompletionResult]::new('--foreground', '--foreground', [CompletionResultType]::ParameterName, 'Stay attached and log to stderr (for systemd, containers and tests)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'peerd;stop' {
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The control socket of the daemon to stop [default: as `start`''s, from the config file or the default location]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'The config file, for its `socket`')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'peerd;config' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'The config file [default: $XDG_CONFIG_HOME/peerchat/config.toml]')
            [CompletionResult]::new('--name', '--name', [CompletionResultType]::ParameterName, 'Your name: 1-32 ASCII letters, digits, ''_'', ''-'', ''.'', starting with a letter or digit. [default: your login name]')
            [CompletionResult]::new('--directory', '--directory', [CompletionResultType]::ParameterName, 'The directory''s URL, or the URLs of its replicas separated by commas: peerd uses the first that answers and moves to the next when it stops answering. [default: http://127.0.0.1:7300]')
            [CompletionResult]::new('--directory-key', '--directory-key', [CompletionResultType]::ParameterName, 'For an https:// directory: the fingerprint its key must have (`directoryd key` prints it). Without it the key seen first is trusted and remembered')
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Where to listen for peers. [default: 0.0.0.0:0]')
            [CompletionResult]::new('--advertise', '--advertise', [CompletionResultType]::ParameterName, 'The address other peers dial. Default: the listening port on the IP address the directory sees us coming from')
            [CompletionResult]::new('--socket', '--socket', [CompletionResultType]::ParameterName, 'The control socket chatctl talks to. Default: $XDG_RUNTIME_DIR/peerchat/peerd.sock, or /tmp/peerchat-$UID/peerd.sock')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Conversation history and other state. Default: <user data dir>/peerchat/<name>')
            [CompletionResult]::new('--resume-window', '--resume-window', [CompletionResultType]::ParameterName, 'How long a lost link may take to come back (the dialer redials with backoff) before the conversation ends and unacknowledged messages fail. [default: 30]')
            [CompletionResult]::new('--accept', '--accept', [CompletionResultType]::ParameterName, 'Who may open a conversation without asking you: `all` (anyone the directory verified), `known` (peers you have talked to before; you are asked about the rest), or `ask` (you are asked about everyone: `chatctl accept` / `chatctl reject`). [default: all]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON object instead of aligned lines')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'peerd;install-service' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'The config file the service reads [default: the usual one]')
            [CompletionResult]::new('--print', '--print', [CompletionResultType]::ParameterName, 'Print the unit instead of writing it')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON object (`{"path", "written", "enable"}`, and `unit` with --print) instead of text')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'peerd;completions' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'peerd;help' {
            [CompletionResult]::new('start', 'start', [CompletionResultType]::ParameterValue, 'Start the daemon (detached unless --foreground); returns once it is ready')
            [CompletionResult]::new('stop', 'stop', [CompletionResultType]::ParameterValue, 'Stop the daemon cleanly: goodbye to the peer, unregister, remove the socket')
            [CompletionResult]::new('config', 'config', [CompletionResultType]::ParameterValue, 'Print the configuration `start` would use with these flags, and where each value comes from (flag, environment, config file, default)')
            [CompletionResult]::new('install-service', 'install-service', [CompletionResultType]::ParameterValue, 'Write a systemd user unit that runs peerd (`~/.config/systemd/user/peerd.service`) and print the line that enables it')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print the script that gives SHELL completion of peerd''s commands and flags, e.g. `source <(peerd completions bash)` in ~/.bashrc')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'peerd;help;start' {
            break
        }
        'peerd;help;stop' {
            break
        }
        'peerd;help;config' {
            break
        }
        'peerd;help;install-service' {
            break
        }
        'peerd;help;completions' {
            break
        }
        'peerd;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
