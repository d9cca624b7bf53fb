"""The search engine: Ray Tune driver, trial protocol, ASHA, searchers, callbacks. Knows no trainer."""
