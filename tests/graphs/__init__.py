"""Small graphs the tests build, in the spellings real exporters emit: the inputs of the rule and
fusion tests. ``variants.Graph`` is the builder they share."""
