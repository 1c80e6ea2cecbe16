"""vlmft's built-in hardware profiles: one YAML file per machine, registered under `vlmft.profiles`.

A plugin ships profiles the same way: a package holding `*.yaml` files, named by an entry point in the
`vlmft.profiles` group.
"""
