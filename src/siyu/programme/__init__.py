"""The programme document (会员体系方案): a brand's loyalty rules as one versioned document.

``rules`` holds the document's models, validation and diff (pure); ``service`` stores
versions with their effective-from time and answers which version was in force when.
"""
