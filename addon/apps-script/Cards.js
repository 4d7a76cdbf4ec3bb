/**
 * Renders the plain card models of Logic.js with CardService. Nothing here talks to docket or
 * Gmail; the shapes of the models are documented in Logic.js.
 */

/** Texts of decorated texts and paragraphs are read as simple HTML, so user text is escaped. */
function escapeCardText_(text) {
  return String(text === undefined || text === null ? "" : text)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;");
}

function buildAction_(functionName, parameters) {
  var action = CardService.newAction().setFunctionName(functionName);
  if (parameters && Object.keys(parameters).length) action.setParameters(parameters);
  return action.setLoadIndicator(CardService.LoadIndicator.SPINNER);
}

function buildWidget_(widget) {
  switch (widget.type) {
    case "decoratedText": {
      var decorated = CardService.newDecoratedText().setText(escapeCardText_(widget.text)).setWrapText(true);
      if (widget.topLabel) decorated.setTopLabel(widget.topLabel);
      if (widget.bottomLabel) decorated.setBottomLabel(widget.bottomLabel);
      if (widget.link) {
        decorated.setButton(
          CardService.newTextButton().setText(widget.link.text).setOpenLink(CardService.newOpenLink().setUrl(widget.link.url))
        );
      }
      return decorated;
    }
    case "paragraph":
      return CardService.newTextParagraph().setText(escapeCardText_(widget.text));
    case "checkboxes": {
      var selection = CardService.newSelectionInput()
        .setType(CardService.SelectionInputType.CHECK_BOX)
        .setFieldName(widget.name)
        .setTitle(widget.label);
      widget.items.forEach(function (item) {
        selection.addItem(item.text, item.value, !!item.selected);
      });
      return selection;
    }
    case "textInput": {
      var input = CardService.newTextInput().setFieldName(widget.name).setTitle(widget.label);
      if (widget.hint) input.setHint(widget.hint);
      if (widget.value) input.setValue(widget.value);
      if (widget.multiline) input.setMultiline(true);
      return input;
    }
    case "buttons": {
      var set = CardService.newButtonSet();
      widget.buttons.forEach(function (b) {
        var button = CardService.newTextButton()
          .setText(b.text)
          .setOnClickAction(buildAction_(b.functionName, b.parameters));
        if (b.filled) button.setTextButtonStyle(CardService.TextButtonStyle.FILLED);
        set.addButton(button);
      });
      return set;
    }
    default:
      throw new Error("unknown widget type " + widget.type);
  }
}

/** A card model → a built CardService Card. */
function buildCard_(model) {
  var header = CardService.newCardHeader().setTitle(model.header.title);
  if (model.header.subtitle) header.setSubtitle(model.header.subtitle);
  var card = CardService.newCardBuilder().setHeader(header);
  if (model.name) card.setName(model.name);
  model.sections.forEach(function (s) {
    var section = CardService.newCardSection();
    if (s.header) section.setHeader(escapeCardText_(s.header));
    s.widgets.forEach(function (w) {
      section.addWidget(buildWidget_(w));
    });
    card.addSection(section);
  });
  return card.build();
}

/**
 * The answer to a card action. how = "push" (a new card over this one), "update" (replace
 * this card), "root" (back to the first card and replace it) or "none" (notification only).
 */
function buildActionResponse_(model, how, notification) {
  var response = CardService.newActionResponseBuilder();
  if (model && how !== "none") {
    var card = buildCard_(model);
    var navigation = CardService.newNavigation();
    if (how === "push") navigation.pushCard(card);
    else if (how === "root") navigation.popToRoot().updateCard(card);
    else navigation.updateCard(card);
    response.setNavigation(navigation);
  }
  var text = notification || (model && model.notification);
  if (text) response.setNotification(CardService.newNotification().setText(text));
  return response.build();
}
