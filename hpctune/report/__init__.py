"""Reading a run for people: the HTML report and its plots."""
