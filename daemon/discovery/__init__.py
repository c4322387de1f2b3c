"""Discovery, in parts: which names are media (filters), how the inbox is walked and what the
journal is asked (walk, scanner), when files are complete (settling), when to walk again
(schedule), what the OS says between walks (oswatch), and which of those to use (mode).
`daemon.watcher.Watcher` puts them together; import from there."""
