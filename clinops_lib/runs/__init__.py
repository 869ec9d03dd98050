"""How a runbook is executed: parameters (:mod:`.params`), the papermill run (:mod:`.runner`),
what a runbook records for its bundle (:mod:`.record`) and the run record (:mod:`.runrecord`)."""
