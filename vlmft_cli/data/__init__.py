"""RoboVQA data: download, inspect, synthesise, extract to the processed layout, verify, and read it back.

Modules import tensorflow lazily (inside functions), so importing this package stays cheap.
"""
