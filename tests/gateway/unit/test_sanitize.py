from gateway.sanitize import clean_html, highlight, plain


def test_scripts_handlers_and_javascript_urls_are_removed():
    dirty = ('<p onclick="x()">hi<script>alert(1)</script></p><a href="javascript:alert(1)">l</a>'
             '<img src="x" onerror="alert(2)"><iframe src="http://evil"></iframe><style>p{}</style>')
    assert clean_html(dirty) == ('<p>hi</p><a rel="noopener noreferrer nofollow">l</a><img src="x">')


def test_plain_markup_survives():
    assert clean_html('<table><tr><td colspan="2"><b>x</b></td></tr></table>') == \
        '<table><tbody><tr><td colspan="2"><b>x</b></td></tr></tbody></table>'


def test_highlight_escapes_and_marks():
    assert str(highlight("<b>\x02hit\x03</b> & more")) == "&lt;b&gt;<mark>hit</mark>&lt;/b&gt; &amp; more"
    assert plain("a \x02b\x03 c") == "a b c"
