"""vlmft's built-in recipes: the reference RoboVQA curriculum as files, registered under `vlmft.recipes`.

A recipe is a config file with a name: settings keys (as `--config` takes), plus `description` and
`init_from` (stage 2's starting point, as `vlmft train --init-from` takes). A plugin ships recipes the same
way: a package holding `*.yaml` files, named by an entry point in the `vlmft.recipes` group.
"""
