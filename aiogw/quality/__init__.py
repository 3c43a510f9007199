"""Routing by quality: the prompt-feature bucket of a request (`features`), the priors
`aiogw eval run` writes (`prior`), the learner the strategy reads (`book`); what answered
each request (`memory`, for feedback), the feedback itself and the spot checks a judge
model makes, which feed the learner."""
