"""The six commands (`dfkd train-teacher | distill | probe | report | export | evaluate`): each module is
the only place its command's orchestration lives; everything else is a layer below."""
