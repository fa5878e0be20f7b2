"""From a model to a Program: :mod:`.arguments` binds a call to ``forward``'s signature, :mod:`.capture` traces it
(torch.fx, torch.export) and finds which dimensions are the batch, :mod:`.lower` turns the graph into the IR."""
