"""Stage: scoring models. ``passk`` (pass@1 on a batch's test split); benchmark suites join it later."""
