"""The tools around the model: training (`msmn.training`), coding notes in bulk (`msmn.coding`, the
`msmn-code` command), reviewing codes (`msmn.review`, the `msmn-app` command) and evaluation
(`msmn.evaluation`), with what they share: checkpoint loading, output files and the evidence markup.
`modeling_msmn` (what ships in a checkpoint) and `datasets_scripts` (the data) import nothing of it.
See docs/architecture.md."""
