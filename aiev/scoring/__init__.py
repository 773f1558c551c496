"""Stage: scoring models on the paper's benchmark suites (HumanEval(+), MBPP(+), MultiPL-E, DS-1000), in the
sandbox: samples from a served model (``samples``), each suite's scorer (``suites``: ``plus``, ``multiple``,
``ds1000``). The loop's own pass@1 on a batch's test split is :mod:`aiev.evaluate`."""
