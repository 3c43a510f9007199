"""Quality estimates for `strategy: quality`: the prompt-feature bucket of a request
(`features`), the priors `aiogw eval run` writes (`prior`), and the learner the strategy
reads and feedback and spot checks feed (`book`)."""
